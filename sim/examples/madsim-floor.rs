//! madsim's own cost for the standard benchmark's peer traffic, with nothing of raftchat in
//! it: 5 nodes, each sending a 100-byte frame to each of its 4 peers every 10 ms over madsim's
//! TCP and each receiver answering with 40 bytes, latency 1–5 ms, 61 simulated seconds (about
//! 243,000 messages, what a standard seed's nodes exchange). Most of what a `cargo sim bench`
//! seed costs above this is raftchat's (its tasks, encoding, faults, observer and checks); the
//! rest is its simulated clients' traffic and its simulated disk's timers.
//!
//! Run: `cargo run --release --config "build.rustflags=['--cfg','madsim']" --target-dir
//! target/sim -p raftchat-sim --features mutants --example madsim-floor [SECONDS] [SEEDS]`
//! (SECONDS at most a day).

#[cfg(madsim)]
fn main() {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let (Ok(secs @ 1..=86_400), Ok(seeds @ 1..)) =
        (args.next().unwrap_or(Ok(61)), args.next().unwrap_or(Ok(3)))
    else {
        eprintln!("usage: madsim-floor [SECONDS, 1 to 86400] [SEEDS, at least 1]");
        std::process::exit(2);
    };
    let started = Instant::now();
    let mut messages = 0;
    for seed in 0..seeds {
        let mut config = madsim::Config::default();
        config.net.send_latency =
            Duration::from_millis(1)..Duration::from_millis(5) + Duration::from_micros(1);
        let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, config);
        messages += runtime.block_on(async move {
            let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let handle = madsim::runtime::Handle::current();
            let addresses: Vec<SocketAddr> = (1..=5)
                .map(|i| SocketAddr::from(([10, 0, 0, i], 7000)))
                .collect();
            for &address in &addresses {
                let peers: Vec<SocketAddr> = addresses
                    .iter()
                    .copied()
                    .filter(|&a| a != address)
                    .collect();
                let received = received.clone();
                let node = handle.create_node().ip(address.ip()).build();
                node.spawn(node_main(address, peers, received));
            }
            tokio::time::sleep(Duration::from_secs(secs)).await;
            received.load(std::sync::atomic::Ordering::Relaxed)
        });
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{seeds} seeds of {secs} simulated seconds: {messages} messages in {wall:.2} s wall, \
         {:.2} s per seed, {:.0} messages per wall second",
        wall / seeds as f64,
        messages as f64 / wall
    );
}

/// One node: answers every frame on the connections it accepts, and sends a frame to each
/// peer every 10 ms on connections of its own.
#[cfg(madsim)]
async fn node_main(
    address: std::net::SocketAddr,
    peers: Vec<std::net::SocketAddr>,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    let Ok(listener) = tokio::net::TcpListener::bind(address).await else {
        return;
    };
    let counted = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let answer = frame(40);
                while read_frame(&mut stream).await {
                    counted.fetch_add(1, Ordering::Relaxed);
                    if stream.write_all(&answer).await.is_err() || stream.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut writers = Vec::new();
    for peer in peers {
        let Ok(stream) = tokio::net::TcpStream::connect(peer).await else {
            return;
        };
        let (mut reader, writer) = tokio::io::split(stream);
        let counted = received.clone();
        tokio::spawn(async move {
            while read_frame(&mut reader).await {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        writers.push(writer);
    }
    let request = frame(100);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        for writer in &mut writers {
            if writer.write_all(&request).await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
    }
}

/// A frame: its length (4 bytes, little-endian), then that many bytes.
#[cfg(madsim)]
fn frame(len: u32) -> Vec<u8> {
    let mut frame = len.to_le_bytes().to_vec();
    frame.resize(4 + len as usize, 7);
    frame
}

/// Reads one frame; false once the stream ends or fails.
#[cfg(madsim)]
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(reader: &mut R) -> bool {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 4];
    if reader.read_exact(&mut len).await.is_err() {
        return false;
    }
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    reader.read_exact(&mut body).await.is_ok()
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("madsim-floor runs only in the simulator's build: see its header for the command");
    std::process::exit(2);
}
