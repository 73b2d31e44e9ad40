//! Resident memory per idle connection, on the master's side and on the slave's.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use rocketmq_ha::{Config, MemoryLog};
use rocketmq_ha_transports::{MasterHandle, Running, SlaveHandle, Transport};

use super::probe::resident_bytes;
use super::{host_slaves, loopback_addr, poll_until, PHASE_LIMIT};
use crate::{Context, Failure};

pub(super) struct Memory {
    pub(super) transport: Transport,
    pub(super) master: f64,
    pub(super) slave: f64,
}

/// Resident memory per idle connection on each side: the growth of this process's RSS from
/// `n` to `2n` connections, divided by `n`. Taking the difference of two steps leaves out what
/// the first connection costs once (a runtime's thread, its arena).
pub(super) fn idle_memory(
    transport: Transport,
    config: Config,
    n: usize,
) -> Result<Memory, Failure> {
    let rss = || resident_bytes().ok_or_else(|| Failure("cannot read /proc/self/status".into()));
    let settle = || thread::sleep(Duration::from_millis(50));

    // Master side: raw sockets play slaves that sent their first report (an empty slave's 0)
    // and then stay silent; the master's connections are then started and idle.
    let master = MasterHandle::new(MemoryLog::new(1 << 30), config);
    let server = transport
        .spawn_master(loopback_addr(), master.clone())
        .context("starting the master")?;
    let addr = server
        .local_addr()
        .ok_or_else(|| Failure("the master has no address".into()))?;
    let mut peers = Vec::with_capacity(2 * n);
    let what = format!("idle master connections over {transport}");
    let open_peers = |peers: &mut Vec<TcpStream>| -> Result<(), Failure> {
        for _ in 0..n {
            let mut socket = TcpStream::connect(addr).context("connecting to the master")?;
            socket.write_all(&[0; 8]).context("reporting")?;
            peers.push(socket);
        }
        let want = peers.len();
        poll_until(&what, &[&server], || {
            let slaves = master.slaves();
            slaves.len() == want && slaves.iter().all(|s| s.requested.is_some())
        })?;
        settle();
        Ok(())
    };
    open_peers(&mut peers)?;
    let one = rss()?;
    open_peers(&mut peers)?;
    let two = rss()?;
    let master_bytes = two.saturating_sub(one) as f64 / n as f64;
    drop(peers);
    server.shutdown().context("stopping the master")?;

    // Slave side: a raw listener plays a master that takes each report and sends nothing.
    let listener = TcpListener::bind(loopback_addr()).context("binding a loopback socket")?;
    let addr = listener.local_addr().context("listener address")?;
    let reported = Arc::new(AtomicUsize::new(0));
    let (release, released) = mpsc::channel::<()>();
    let acceptor = {
        let reported = Arc::clone(&reported);
        thread::Builder::new()
            .name("bench-acceptor".into())
            .spawn(move || {
                let mut held = Vec::with_capacity(2 * n);
                for _ in 0..2 * n {
                    let Ok((mut socket, _)) = listener.accept() else {
                        break;
                    };
                    let mut report = [0u8; 8];
                    if socket.read_exact(&mut report).is_ok() {
                        reported.fetch_add(1, Ordering::SeqCst);
                    }
                    held.push(socket);
                }
                let _ = released.recv();
            })
            .context("starting the acceptor")?
    };
    let mut handles = Vec::with_capacity(2 * n);
    let mut runners: Vec<Running> = Vec::new();
    let mut hosts = Vec::new();
    let mut open_slaves = |count: usize| -> Result<(), Failure> {
        let batch: Vec<SlaveHandle<MemoryLog>> = (0..n)
            .map(|_| SlaveHandle::new(addr, MemoryLog::new(1 << 30), config))
            .collect();
        handles.extend(batch.iter().cloned());
        match transport {
            Transport::Blocking => {
                for slave in batch {
                    runners.push(transport.spawn_slave(slave).context("starting a slave")?);
                }
            }
            _ => hosts.push(host_slaves(transport, batch)?),
        }
        let limit = Instant::now() + PHASE_LIMIT;
        while reported.load(Ordering::SeqCst) < count {
            if Instant::now() > limit {
                return Err(Failure(format!(
                    "idle slave connections over {transport}: only {} of {count} reported",
                    reported.load(Ordering::SeqCst)
                )));
            }
            thread::sleep(Duration::from_millis(1));
        }
        settle();
        Ok(())
    };
    // The async transports run each step's slaves on one thread; the first step's thread is
    // the fixed cost the difference leaves out, the second step's is spread over n slaves.
    open_slaves(n)?;
    let one = rss()?;
    open_slaves(2 * n)?;
    let two = rss()?;
    let slave_bytes = two.saturating_sub(one) as f64 / n as f64;
    for slave in &handles {
        slave.shutdown();
    }
    drop(runners);
    for host in hosts {
        let _ = host.join();
    }
    let _ = release.send(());
    let _ = acceptor.join();
    Ok(Memory {
        transport,
        master: master_bytes,
        slave: slave_bytes,
    })
}
