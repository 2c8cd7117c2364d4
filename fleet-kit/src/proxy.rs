//! TCP proxies on loopback between a device and its server or broker: [`CutProxy`], which a test
//! takes down (open connections cut, new ones refused) and brings back; [`Balancer`], the load
//! balancer in front of server replicas (each new connection to the next replica that accepts
//! it, so devices spread over the replicas and move off one that died); and [`FlakyProxy`], which
//! cuts connections at random moments (mid-message, mid-handshake) and stalls them (one
//! direction stops forwarding for a while). TLS passes through both untouched: the agent still
//! talks to the server's certificate, only the path between them is bad. The flaky proxy's
//! randomness is a seeded xorshift, so a failing run can be replayed by its seed (printed when
//! it starts).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

/// A proxy the test can take down and bring back.
pub struct CutProxy {
    /// The loopback port it listens on.
    pub port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl CutProxy {
    /// Forwards `127.0.0.1:{port}` → `127.0.0.1:{target}`, up.
    pub fn start(target: u16) -> Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (u, c) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !u.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = (
                    client.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                ) else {
                    continue;
                };
                c.lock().unwrap().extend([c1, s1]);
                for (from, to) in [(c2, s2), (server, client)] {
                    std::thread::spawn(move || pump(from, to));
                }
            }
        });
        Ok(CutProxy { port, up, conns })
    }

    /// The far end unreachable: open connections cut, new ones refused.
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Reachable again.
    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes, then closes both ways.
/// A TCP load balancer over server replicas, as a fleet puts in front of them: each new
/// connection goes to the next target in turn that accepts it (a dead replica is skipped).
pub struct Balancer {
    /// The loopback port it listens on.
    pub port: u16,
}

impl Balancer {
    /// Balances `127.0.0.1:{port}` over `127.0.0.1:{targets}`.
    pub fn start(targets: Vec<u16>) -> Result<Balancer> {
        anyhow::ensure!(!targets.is_empty(), "a balancer needs a target");
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        std::thread::spawn(move || {
            let mut next = 0usize;
            for client in listener.incoming().flatten() {
                let server = (0..targets.len()).find_map(|i| {
                    let target = targets[(next + i) % targets.len()];
                    let s = TcpStream::connect_timeout(
                        &([127, 0, 0, 1], target).into(),
                        Duration::from_secs(1),
                    )
                    .ok()?;
                    next = (next + i + 1) % targets.len();
                    Some(s)
                });
                let Some(server) = server else {
                    continue; // every replica down: the device retries
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                for (from, to) in [(c2, s2), (server, client)] {
                    std::thread::spawn(move || pump(from, to));
                }
            }
        });
        Ok(Balancer { port })
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

/// How bad the network is.
#[derive(Clone, Copy, Debug)]
pub struct Flakiness {
    /// Chance that a connection is cut at a random moment of its life.
    pub cut_chance: f64,
    /// A cut connection lives this long at most (uniform from a tenth of it).
    pub max_life: Duration,
    /// Chance, per forwarded chunk, of stalling that direction first.
    pub stall_chance: f64,
    /// A stall lasts this long at most (uniform from a tenth of it).
    pub max_stall: Duration,
}

impl Default for Flakiness {
    fn default() -> Self {
        Flakiness {
            cut_chance: 0.6,
            max_life: Duration::from_secs(6),
            stall_chance: 0.05,
            max_stall: Duration::from_millis(1500),
        }
    }
}

/// Counters of what the proxy did.
#[derive(Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections cut.
    pub cuts: AtomicU64,
    /// Stalls.
    pub stalls: AtomicU64,
}

/// A running proxy; stops (and cuts everything) when dropped.
pub struct FlakyProxy {
    /// The loopback port it listens on.
    pub port: u16,
    /// What it did so far.
    pub stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
    fn upto(&mut self, max: Duration) -> Duration {
        let ms = max.as_millis().max(10) as u64;
        Duration::from_millis(ms / 10 + self.next() % (ms - ms / 10))
    }
}

impl FlakyProxy {
    /// Starts forwarding `127.0.0.1:{port}` → `127.0.0.1:{target}`.
    pub fn start(target: u16, flakiness: Flakiness, seed: u64) -> Result<FlakyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        eprintln!("flaky proxy :{port} -> :{target}, seed {seed}");
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ProxyStats::default());
        let (s, st) = (stop.clone(), stats.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(seed.max(1));
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        st.connections.fetch_add(1, Ordering::Relaxed);
                        let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        let life = rng
                            .chance(flakiness.cut_chance)
                            .then(|| rng.upto(flakiness.max_life));
                        let conn_seed = rng.next();
                        connection(client, upstream, life, flakiness, conn_seed, &s, &st);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(FlakyProxy { port, stats, stop })
    }

    /// A one-line account of what it did.
    pub fn summary(&self) -> String {
        format!(
            "{} connections, {} cut, {} stalls",
            self.stats.connections.load(Ordering::Relaxed),
            self.stats.cuts.load(Ordering::Relaxed),
            self.stats.stalls.load(Ordering::Relaxed)
        )
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Pumps one connection both ways on two threads until either side closes, the proxy stops,
/// or its life (if it has one) runs out.
fn connection(
    client: TcpStream,
    upstream: TcpStream,
    life: Option<Duration>,
    flakiness: Flakiness,
    seed: u64,
    stop: &Arc<AtomicBool>,
    stats: &Arc<ProxyStats>,
) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let deadline = life.map(|l| Instant::now() + l);
    let done = Arc::new(AtomicBool::new(false));
    let rng = Arc::new(Mutex::new(Rng(seed.max(1))));
    let (Ok(c), Ok(u)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let pairs = [(c, u), (upstream, client)];
    for (mut from, mut to) in pairs {
        let (done, stop, stats, rng) = (done.clone(), stop.clone(), stats.clone(), rng.clone());
        std::thread::spawn(move || {
            let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                if done.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                    break;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    if !done.swap(true, Ordering::Relaxed) {
                        stats.cuts.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                let n = match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        continue
                    }
                    Err(_) => break,
                };
                let stall = {
                    let mut r = rng.lock().unwrap();
                    r.chance(flakiness.stall_chance)
                        .then(|| r.upto(flakiness.max_stall))
                };
                if let Some(pause) = stall {
                    stats.stalls.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(pause);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            done.store(true, Ordering::Relaxed);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}
