//! A `SYNC_MASTER` put with the smol driver, everything in one async program: a master and a
//! slave on loopback, then appends that return only once the slave has acknowledged them.
//!
//! ```sh
//! cargo run -p rocketmq-ha-transports --example sync_put
//! ```

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use async_io::Async;
use futures_lite::future;
use rocketmq_ha::{Config, MemoryLog};
use rocketmq_ha_transports::{smol as driver, MasterHandle, SlaveHandle};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::default();
    let master = MasterHandle::new(MemoryLog::new(1 << 30), config);
    let listener = Async::<TcpListener>::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let slave = SlaveHandle::new(
        listener.get_ref().local_addr()?,
        MemoryLog::new(1 << 30),
        config,
    );

    let puts = async {
        for i in 0..5 {
            let message = format!("message {i}");
            let end = master.append(message.into_bytes())?;
            let started = Instant::now();
            let deadline = started + Duration::from_secs(3); // RocketMQ's slaveTimeout
            driver::wait_replicated(&master, end, 1, deadline).await?;
            println!(
                "put up to offset {end}: acknowledged by the slave in {:?}",
                started.elapsed()
            );
        }
        // Ends both drivers below: their sockets close and they return.
        master.shutdown();
        slave.shutdown();
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let drivers = future::zip(
        driver::serve(listener, master.clone()),
        driver::run_slave(slave.clone()),
    );
    let ((served, ()), put) = async_io::block_on(future::zip(drivers, puts));
    served?;
    put?;
    Ok(())
}
