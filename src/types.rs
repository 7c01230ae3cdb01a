//! Newtypes for the identifiers and counters that cross module boundaries.
//!
//! Raft bugs are often a term compared with an index; distinct types make that a compile error.
//! All are fixed-width `u64` on the wire and on disk.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_newtype!(
    /// A cluster member's identity, fixed for its lifetime.
    NodeId,
    "n"
);
id_newtype!(
    /// A Raft term (Raft §5.1): a logical clock that orders leaderships.
    Term,
    "t"
);
id_newtype!(
    /// A position in the replicated log, 1-based; `LogIndex(0)` is the empty prefix.
    LogIndex,
    "i"
);
id_newtype!(
    /// A chat client's session identity, assigned as the log index of its registration.
    ClientId,
    "c"
);
id_newtype!(
    /// A linearizable read's identity, chosen by the host that asks for it (unique among its
    /// reads in flight), and handed back with the read's index.
    ReadId,
    "r"
);

impl Term {
    /// The term after this one.
    pub fn next(self) -> Term {
        Term(self.0.checked_add(1).expect("term overflow"))
    }
}

impl LogIndex {
    /// The index after this one.
    pub fn next(self) -> LogIndex {
        LogIndex(self.0.checked_add(1).expect("log index overflow"))
    }

    /// The index before this one; `LogIndex(0)` has none.
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.checked_sub(1).expect("log index underflow"))
    }
}
