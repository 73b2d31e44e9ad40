//! Everything of `rocketmq-ha` that touches the operating system: socket drivers for the sans-IO
//! machines and a file-backed commit log in RocketMQ's on-disk layout.

#![warn(missing_docs)]

pub mod file_log;
