//! A segmented commit log on disk in RocketMQ's layout (work in progress).
