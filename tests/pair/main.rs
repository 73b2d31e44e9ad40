//! The in-memory pair harness: a master service, one master connection and one slave client,
//! wired back to back in virtual time. One module per scenario, named as a sentence.

mod harness;

mod a_fresh_slave_gets_only_the_last_segment;
mod a_slave_resumes_from_a_nonzero_offset;
mod acks_above_the_masters_max_close_the_connection;
mod every_split_point_gives_identical_results;
mod housekeeping_closes_each_side;
mod idle_connections_heartbeat_both_ways;
mod offset_mismatch_closes_without_appending;
mod oversize_and_negative_frames_close_the_slave;
mod requests_below_retention_are_refused;
mod sync_waiters_complete_exactly_once;
