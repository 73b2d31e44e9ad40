#!/usr/bin/env python3
"""Writes the hand-made seed inputs of fuzz/corpus/<target>/seed-*.

Each seed is a small program in the byte encoding its harness reads (see fuzz/src/<target>.rs:
every choice is one to eight big-endian bytes, read front to back). The seeds put the fuzzer at
the interesting states at once: a connected slave receiving frames, a master streaming across
segment boundaries, waiters racing deadlines, valid and invalid frames. Regression inputs
(regression-*) are minimised crashes and are not written by this script.

Run from the fuzz/ directory: python3 make_seeds.py
"""

import os
import struct


def u8(*values):
    return bytes(values)


def u16(v):
    return struct.pack(">H", v)


def u32(v):
    return struct.pack(">I", v)


def u64(v):
    return struct.pack(">Q", v)


def write(target, name, data):
    path = os.path.join("corpus", target, "seed-" + name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


# --- client_stream ------------------------------------------------------------------------

C_RAW, C_FRAME, C_FIELDS, C_READ, C_READ_ALL = 0, 2, 4, 5, 7
C_APPLY, C_ANNOUNCE, C_POLL, C_ADVANCE, C_DEADLINE, C_DIAL, C_MISC = 8, 10, 11, 12, 13, 14, 15


def client_config(frame=2, batch=32768, hb=5000, hk=20000, backoff=100, backoff_max=5000,
                  stored=b"\x00", read=b"\x02"):
    """Java's defaults unless told otherwise; `frame` is the max-frame-size choice."""
    head = u8(frame) if frame in (2, 3) else u8(frame, 0)
    return (head + u32(batch - 1) + u16(hb - 1) + u16(hk - hb - 1) + u16(backoff - 1)
            + u16(backoff_max - backoff) + u64(7) + stored + read)


def connect(apply=True):
    return u8(C_DIAL, 0, 1 if apply else 0)


def frame_at_expected(length_kind, length, fill=0x5A):
    """A frame at the offset the slave expects (length_kind 1: 1..=64, 2: 1..=4096)."""
    length_byte = u8(length - 1) if length_kind == 1 else u16(length - 1)
    return u8(C_FRAME, 1, length_kind) + length_byte + u8(fill)


def client_seeds():
    driver_loop = u8(C_MISC, 0x80)
    # An empty slave: dial, report 0, get a frame at 3 GiB (§2.4), append, ack, stream on.
    data = client_config() + connect() + u8(C_POLL)
    data += u8(C_FRAME, 2, 2, 1, 20, 0x11) + u8(C_READ_ALL, C_APPLY, 0, 1, C_POLL)
    for n in (1, 100, 4096):
        data += frame_at_expected(2, n) + driver_loop
    write("client_stream", "empty-slave-streams", data)

    # A slave at 4096 reads frames one byte, then a few bytes, at a time.
    data = client_config(stored=u8(1) + u16(4095), read=u8(0, 0)) + connect() + u8(C_POLL)
    for n in (10, 1, 64):
        data += frame_at_expected(1, n) + u8(C_READ_ALL, C_APPLY, 0, 1, C_POLL)
    write("client_stream", "byte-at-a-time", data)

    # Heartbeats both ways and then silence until housekeeping closes, then reconnect.
    data = client_config(hb=1000, hk=3000) + connect() + u8(C_POLL)
    data += u8(C_FRAME, 0, 0, C_READ_ALL)  # a heartbeat at 0
    data += u8(C_ADVANCE) + u16(1000) + u8(1, C_POLL)
    data += u8(C_DEADLINE, C_DEADLINE, C_DEADLINE, C_DEADLINE, C_DIAL, 0, 1, C_POLL)
    write("client_stream", "heartbeat-housekeeping-reconnect", data)

    # A tiny frame limit (13 + 20): the largest legal frame, then one byte too large.
    data = client_config(frame=0, batch=1, stored=u8(1) + u16(99)) + connect() + u8(C_POLL)
    data = bytearray(data)
    data[1] = 20  # max_frame_size = 13 + 20 = 33, room 21
    data = bytes(data)
    data += frame_at_expected(1, 21) + u8(C_READ_ALL, C_APPLY, 0, 1)
    data += u8(C_FRAME, 1, 3, 1, 0x22, C_READ_ALL)
    write("client_stream", "frame-limit-edges", data)

    # Hostile headers: offset mismatch, negative size, size near i32::MAX.
    data = client_config(stored=u8(1) + u16(99)) + connect()
    data += u8(C_FIELDS, 1, 3, 4) + u8(3) + b"abc" + u8(C_READ_ALL, C_DEADLINE, C_DIAL, 0, 1)
    data += u8(C_FIELDS, 1, 0, 5) + u8(0) + u8(C_READ_ALL, C_DEADLINE, C_DIAL, 0, 1)
    data += u8(C_FIELDS, 2, 1, 0) + u8(0) + u8(C_READ_ALL)
    write("client_stream", "hostile-headers", data)

    # Disconnect with appends pending, which the driver drops, then resume.
    data = client_config(stored=u8(1) + u16(499)) + connect() + frame_at_expected(1, 5)
    data += u8(C_READ_ALL)
    data += u8(C_MISC, 5, C_DEADLINE, C_DIAL, 0, 0, C_POLL)
    data += frame_at_expected(1, 7) + driver_loop
    write("client_stream", "drop-pending-and-resume", data)


# --- master_stream ------------------------------------------------------------------------

M_RAW, M_REPORT, M_POLL, M_WRITE, M_WRITTEN = 0, 2, 5, 7, 8
M_ADVANCE, M_DEADLINE, M_GROW, M_RETAIN, M_LOOP = 10, 11, 12, 14, 15


def master_config(batch=b"\x00\x10", hb=5000, hk=20000, oldest=False, above_max=True,
                  above_sent=False):
    return (batch + u16(hb - 1) + u16(hk - hb - 1) + u8(0 if oldest else 1) + u8(0)
            + u8(1 if above_max else 0) + u8(0 if above_sent else 1))


def master_log(segment=b"\x00\x07", base=b"\x00", pushes=(), retain=None):
    data = segment + base + u8(0x42) + u8(len(pushes))
    for push in pushes:
        data += push
    data += u8(0) if retain is None else u8(1) + retain
    return data


def report(kind, delta=2, split=8):
    """A report near a value of interest: kind 0 zero, 1 min, 2 max, 3 next, 4 ack."""
    return u8(M_REPORT, kind, delta, split)


def master_seeds():
    # Segment 8, batch 17: a 3-segment log streamed from a request of 0 (last segment rule).
    log = master_log(pushes=(u8(1, 20), u8(1, 10)))
    data = master_config() + log + report(0) + u8(M_LOOP) + report(3) + u8(M_GROW, 1, 40, M_LOOP)
    write("master_stream", "request-zero-last-segment", data)

    # OldestRetained with retention: streams from the oldest retained segment; acks follow.
    log = master_log(segment=b"\x01\x00\x3f", pushes=(u8(2) + u16(300),), retain=u8(0, 0))
    data = master_config(oldest=True) + log + report(0) + u8(M_LOOP) + report(3) + report(3, 3)
    write("master_stream", "oldest-retained", data)

    # Partial writes of a frame, then on_transmitted, then a heartbeat when idle.
    log = master_log(pushes=(u8(0, 5),))
    data = master_config(hb=1000, hk=4000) + log + report(1, 3)
    data += u8(M_POLL, M_WRITE, 3, M_WRITE, 20)
    data += u8(M_WRITTEN, M_ADVANCE) + u16(1000) + u8(0, M_POLL, M_WRITTEN)
    data += u8(M_DEADLINE, M_DEADLINE, M_DEADLINE)
    write("master_stream", "partial-writes-heartbeat-housekeeping", data)

    # Reports split across reads, several per read, then a backwards ack.
    data = master_config() + master_log(pushes=(u8(1, 100),)) + report(2, 2, 3)
    data += u8(M_RAW, 16) + u64(50) + u64(60) + u8(M_RAW, 8) + u64(10)
    write("master_stream", "report-splits-and-backwards-ack", data)

    # Strict acks: above-sent and above-max rejected; a request below retention.
    log = master_log(segment=b"\x00\x03", pushes=(u8(1, 30),), retain=u8(1))
    data = master_config(above_sent=True) + log + report(1, 2) + u8(M_POLL) + report(2, 4)
    write("master_stream", "strict-acks-and-retention", data)

    # Retention deletes the segment a lagging slave still needs.
    log = master_log(segment=b"\x00\x07", pushes=(u8(1, 40),))
    data = master_config() + log + report(1, 3) + u8(M_GROW, 3, M_RETAIN, 1, M_POLL)
    write("master_stream", "lagging-slave-loses-its-segment", data)


# --- waiters ------------------------------------------------------------------------------

W_REGISTER, W_ACK, W_REMOVE, W_WAIT, W_TIMEOUT, W_ADVANCE, W_MISC, W_QUERY = 0, 1, 4, 5, 8, 9, 10, 11
NOW = u8(1)  # at(): the current instant


def wait(offset_kind, offset, acks, deadline_kind, ms=0):
    data = u8(W_WAIT, offset_kind) + (u64(offset) if offset_kind == 3 else u8(offset)) + u8(acks)
    data += NOW + u8(deadline_kind)
    if deadline_kind == 1:
        data += u8(ms)
    elif deadline_kind >= 2:
        data += u16(ms - 1)
    return data


def ack(conn, delta):
    return u8(W_ACK, conn, 0, delta) + NOW + u8(1)


def waiters_seeds():
    # Two slaves, quorum waits, acks completing some, a removal, deadlines passing.
    data = u8(2) + u8(W_REGISTER) + NOW + u8(W_REGISTER) + NOW
    data += wait(2, 10, 1, 2, 3000) + wait(2, 10, 2, 2, 3000) + wait(2, 40, 1, 2, 1000)
    data += ack(0, 12) + u8(W_QUERY, 0) + u16(5) + ack(1, 11) + u8(W_REMOVE, 0) + NOW
    data += u8(W_ADVANCE, 2, W_TIMEOUT) + NOW + u8(W_ADVANCE, 2, W_TIMEOUT) + NOW
    write("waiters", "quorum-and-deadlines", data)

    # An ack exactly at a deadline is too late; a wait already satisfied completes at once.
    data = u8(0, 4) + u8(W_REGISTER) + NOW + wait(2, 5, 1, 2, 500)
    data += u8(W_ADVANCE, 1) + u16(500) + ack(0, 9) + wait(2, 5, 1, 2, 10) + wait(2, 1, 0, 0)
    write("waiters", "ack-at-deadline-is-late", data)

    # Clock going backwards, waits with past deadlines, then shutdown with waits pending.
    data = u8(2) + u8(W_REGISTER) + u8(0, 50) + wait(2, 7, 1, 1, 20) + wait(2, 7, 3, 2, 900)
    data += u8(W_TIMEOUT, 0, 100, W_MISC, 0) + NOW + wait(2, 1, 1, 2, 5)
    write("waiters", "backwards-clock-and-shutdown", data)

    # Many waiters on one slave, completed in offset order by rising acks.
    data = u8(2) + u8(W_REGISTER) + NOW
    for off in range(0, 60, 6):
        data += wait(2, off, 1, 2, 2000 + off)
    for _ in range(6):
        data += ack(0, 10)
    write("waiters", "rising-acks-many-waiters", data)


# --- wire_decode --------------------------------------------------------------------------

def wire_seeds():
    # Test vectors V1-V6 of the protocol description, under the Java frame limit.
    v3 = bytes.fromhex("000000004000000000000000")
    v4 = bytes.fromhex("00000000c000000000000005") + b"hello"
    v6 = bytes.fromhex("000000000000200000000010")
    data = u8(1) + u8(1) + u64(0) + u8(1) + u64(0x40001234)
    data += u8(0) + v3 + u8(0) + v6 + u8(3, len(v4)) + v4 + u8(3, len(v3)) + v3 + u8(5)
    v5a = bytes.fromhex("0000000000001000000000000000200000000000")[:19]
    data += u8(2, len(v5a)) + v5a + u8(2, 5) + bytes.fromhex("0000003000")
    write("wire_decode", "protocol-vectors", data)

    # A tiny limit: frames at, and one past, the limit; negative sizes and offsets.
    data = u8(0, 8)  # max frame 20
    data += u8(4) + u64(100) + u8(8) + bytes(8) + u8(6)
    data += u8(3, 12) + u64(1) + u32(9)
    data += u8(5, 0) + u64(0) + u32(0xFFFFFFFF) + u8(0) + u64(1 << 63) + u32(0)
    write("wire_decode", "limits-and-negatives", data)

    # A long valid stream split at every kind of point, then at the top of the offset range.
    data = u8(1)
    for i in range(8):
        data += u8(4) + u64(1000 + 7 * i) + u8(7) + bytes(range(7)) + u8(i * 3)
    data += u8(4) + u64((1 << 63) - 4) + u8(3) + b"abc" + u8(9)
    data += u8(4) + u64((1 << 63) - 4) + u8(4) + b"abcd" + u8(9)
    write("wire_decode", "split-stream-and-top-offsets", data)

    # Reports: partial values carried across feeds, then a negative one.
    data = u8(2) + u8(2, 5) + u64(0x0102030405060708)[:5] + u8(2, 3) + u64(0x0102030405060708)[5:]
    data += u8(2, 16) + u64(1) + u64(2) + u8(2, 8) + u64((1 << 64) - 1)
    write("wire_decode", "report-stream", data)


# --- sim_schedule -------------------------------------------------------------------------

# tests/sim/scenario.rs ALL_FAULTS, in order: each is switched on by a 2-byte draw >= 500.
FAULTS = ["Latency", "ShortReads", "ShortWrites", "Stall", "Burst", "PartitionOneWay",
          "PartitionTwoWay", "Reset", "Eof", "RefuseConnect", "SlowConnect", "SlaveCrash",
          "SlowAppend", "Clock", "Zombie", "BehindRetained", "Retention", "MasterRestart",
          "LoseTail"]


def fault_set(*names):
    return b"".join(u16(999 if f in names else 0) for f in FAULTS)


def noise(length, seed):
    """Deterministic filler for the simulator's later draws (sizes, times, which fault when)."""
    out, x = bytearray(), seed
    for _ in range(length):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(x >> 56)
    return bytes(out)


def sim_seeds():
    # The calm run: every draw zero (RocketMQ's defaults, one slave, no faults). Length 0 is a
    # multiple of 4, so the harness also replays it for determinism.
    write("sim_schedule", "calm", b"")
    groups = {
        "chunking-and-latency": ("Latency", "ShortReads", "ShortWrites", "Burst"),
        "partitions-and-resets": ("PartitionOneWay", "PartitionTwoWay", "Reset", "Eof",
                                  "RefuseConnect", "SlowConnect"),
        "crashes-and-restarts": ("SlaveCrash", "MasterRestart", "LoseTail", "SlowAppend"),
        "retention-and-lag": ("BehindRetained", "Retention", "Stall"),
        "clocks-and-zombies": ("Clock", "Zombie", "Stall"),
        "everything": tuple(FAULTS),
    }
    for i, (name, faults) in enumerate(groups.items()):
        write("sim_schedule", name, fault_set(*faults) + noise(258, i + 1))


# --- record_walk --------------------------------------------------------------------------

def record_walk_seeds():
    # Raw: the worked example of store-format.md §3.8 (v1, topic T, body hello), then a blank
    # record, then zeros: one record, ending at the blank.
    example = bytes.fromhex(
        "00000061daa320a73610a68600000000" "00000000000000000000000000000000"
        "00000000000000000000018bcfe56800" "7f0000010000c3500000018bcfe5687b"
        "c0a8000a00002a9f0000000000000000" "000000000000000568656c6c6f015400" "00")
    write("record_walk", "raw-example-blank", u8(0) + u64(0) + example + u32(4096 - 97)
          + u32(0xCBD43194) + bytes(24))
    # Raw: the same record with a flipped body byte, CRC checked: a bad record at 1 GiB.
    bad = bytearray(example)
    bad[0x59] ^= 1
    write("record_walk", "raw-crc-failure", u8(0) + u64(1 << 30) + bytes(bad) + bytes(16))

    def message(flags, topic_len, body, props, queue_id=0, queue_offset=0, ts=0):
        return (u8(flags, topic_len) + u8(len(body)) + body + u8(len(props)) + props
                + u8(queue_id) + u32(queue_offset) + u32(ts))

    msgs = [message(0, 5, b"body-%d" % i, b"KEYS\x01k%d\x02" % i, i, i, 1000 + i)
            for i in range(5)]
    extra = message(0, 3, b"torn-record-body", b"")
    # Encoded: five v1 records, then a record torn inside its body, then zeros.
    write("record_walk", "encoded-torn-then-zeros", u8(1) + u64(0) + u8(5) + b"".join(msgs)
          + extra + u8(3) + u16(60) + u8(10))
    # Encoded: v2 and IPv6 hosts (flags 2|4|8, and 1 for a topic over 127 bytes), then a blank.
    msgs = [message(2 | 4, 9, b"v2", b""), message(1 | 8, 20, b"long-topic", b"A\x01b"),
            message(4 | 8, 0, b"", b"")]
    write("record_walk", "encoded-v2-ipv6-blank", u8(1) + u64(4 << 22) + u8(3) + b"".join(msgs)
          + extra + u8(4) + u32(100) + u8(8) + bytes(8))
    # Encoded, CRC unchecked, then arbitrary bytes after the records.
    write("record_walk", "encoded-then-junk", u8(3) + u64(0) + u8(2) + b"".join(msgs[:2])
          + extra + u8(5) + bytes(range(40)))


def autoswitch_client_seeds():
    """Programs for fuzz/src/autoswitch_client.rs (setup, then one op byte per step)."""
    def setup(epochs=b"\x00", log_len=b""):
        # 4 MiB frames, broker id 2, no flags, the local epoch list, the log, the seed.
        return u8(2, 2, 0, 0) + epochs + log_len + u64(1)

    connect = u8(4, 1) + u8(6)
    read = u8(3, 199)

    def frame(length, expected=True, epoch=1, start=0, confirm=None):
        body = u8(length) + bytes(range(length))
        where = u8(2) if expected else u8(1) + u16(0)
        conf = u8(0) if confirm is None else u8(1) + u16(confirm)
        return u8(2) + body + where + u8(epoch) + u16(start) + conf

    # A new replica: answer (1, 0), (2, 50), max 100; frames across the epoch change.
    data = (setup() + connect + u8(1) + u16(100) + u8(2, 0, 0) + u16(49) + read + u8(6)
            + frame(30, confirm=0) + frame(20, confirm=30) + frame(10, epoch=2, start=50,
                                                                    confirm=50)
            + read + u8(4, 1) + u8(6) + u8(5) + u16(6000) + u8(6) + u8(8) + read)
    write("autoswitch_client", "new-replica-streams", data)
    # A diverged log: local (1, 0), (2, 100) with 150 bytes; master (1, 0), (3, 120), max 200.
    data = (setup(u8(2, 0, 0) + u16(99), u16(50)) + connect + u8(1) + u16(200)
            + u8(2, 0, 1) + u16(119) + read + u8(4, 1) + u8(6)
            + frame(20, epoch=1, start=0, confirm=100) + frame(30, epoch=3, start=120,
                                                               confirm=150)
            + read + u8(4, 1) + u8(6))
    write("autoswitch_client", "diverged-log-truncates", data)
    # Hostile bytes, silence, disconnects, failed dials.
    data = (setup(u8(1, 0), u16(10)) + connect + u8(0, 20) + b"\xff" * 20 + read
            + u8(5) + u16(29000) + u8(4, 1) + u8(6) + u8(7) + u8(5) + u16(20000) + u8(4, 0)
            + u8(5) + u16(20000) + u8(4, 1) + u8(6) + u8(1) + u16(10) + u8(0) + read
            + u8(6) + frame(5, expected=False) + read)
    write("autoswitch_client", "hostile-bytes-silence-and-redials", data)


def autoswitch_master_seeds():
    """Programs for fuzz/src/autoswitch_master.rs (setup, then one op byte per step)."""
    poll_write = u8(7, 1) + u16(100) + u8(8) + u16(3999)

    # Batch 64, 256-byte segments, 300 bytes: epochs change while a slave streams.
    data = (u8(63, 0, 2) + u16(300) + u8(1, 0, 0, 2) + u8(7, 0) + u8(8) + u16(3999)
            + u8(2, 0) + poll_write * 6 + u8(4, 0) + u8(3) + u16(500) + u8(7)
            + poll_write * 12 + u8(6) + u16(6000) + poll_write)
    write("autoswitch_master", "epochs-and-segments", data)
    # Retention, a last-file slave, a request in range, a second handshake, then a request
    # out of range.
    data = (u8(255, 15, 0) + u16(1000) + u8(5) + u16(500) + u8(1, 1, 0, 3) + u8(7, 0)
            + u8(8) + u16(3999) + u8(2, 1) + u16(700) + poll_write * 5 + u8(1, 0, 1, 3)
            + u8(7, 0) + u8(8) + u16(3999) + u8(2, 2) + u16(5000) + poll_write)
    write("autoswitch_master", "retention-requests-rehandshake", data)
    # Partial writes, silence, then an illegal state.
    data = (u8(10, 3, 4) + u16(2000) + u8(1, 0, 0, 9) + u8(7, 0) + u8(8) + u16(3)
            + u8(8) + u16(3999) + u8(2, 0) + u8(7, 0) + u8(8) + u16(5) + u8(6) + u16(9000)
            + u8(8) + u16(3999) + u8(0, 12) + bytes([0, 0, 0, 3] + [0] * 8))
    write("autoswitch_master", "partial-writes-and-illegal-state", data)


if __name__ == "__main__":
    autoswitch_client_seeds()
    autoswitch_master_seeds()
    client_seeds()
    master_seeds()
    waiters_seeds()
    wire_seeds()
    record_walk_seeds()
    sim_seeds()
