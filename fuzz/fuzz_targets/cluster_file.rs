//! The operator's cluster file: any text gets a parsed cluster or one line of error, never a
//! panic; a parsed cluster yields a valid node configuration for each of its members (unless it
//! names a token key file, which is read then).
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftchat_node::cluster_file::ClusterFile;
use std::path::Path;

fuzz_target!(|text: &str| {
    match ClusterFile::parse(text, Path::new("cluster.toml")) {
        Ok(file) => {
            for &id in file.members.keys() {
                let config = file.node_config(id, 7);
                // A named token key is a file to read, which need not exist here.
                if file.auth.token_key.is_none() {
                    config.expect("a parsed cluster configures its members");
                }
            }
            let _ = file.client_config(7);
        }
        Err(error) => {
            let line = error.to_string();
            assert!(!line.contains('\n'), "one line: {line}");
        }
    }
});
