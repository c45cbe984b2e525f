//! The kernel ABI numbers: event kinds, directions, owner sources, counter indexes and limits.
//!
//! All of them come from `bpf/dnsledger.h` through BTF: libbpf-cargo emits the header's enums
//! into the skeleton's `types` module (the zero-initialised globals in `dnsledger.bpf.c` make
//! it), and this module only narrows them to the Rust types the decoder uses. Nothing here is
//! copied by hand; a value that changes in C changes here at the next build.

use super::skel::types::{
    bypass_kind, counter, direction, dnsledger_abi, event_kind, owner_source, side,
};

/// Version carried by every event (`DNSLEDGER_EVENT_VERSION`).
pub const EVENT_VERSION: u8 = dnsledger_abi::DNSLEDGER_EVENT_VERSION.0 as u8;
pub const EVENT_PACKET: u8 = event_kind::EVENT_PACKET.0 as u8;
pub const EVENT_EXEC: u8 = event_kind::EVENT_EXEC.0 as u8;
pub const EVENT_EXIT: u8 = event_kind::EVENT_EXIT.0 as u8;
pub const EVENT_STACK: u8 = event_kind::EVENT_STACK.0 as u8;
pub const EVENT_BYPASS: u8 = event_kind::EVENT_BYPASS.0 as u8;
pub const BYPASS_DOT: u8 = bypass_kind::BYPASS_DOT.0 as u8;
pub const BYPASS_DOQ: u8 = bypass_kind::BYPASS_DOQ.0 as u8;
pub const BYPASS_DOH_LIKELY: u8 = bypass_kind::BYPASS_DOH_LIKELY.0 as u8;
pub const DIR_EGRESS: u8 = direction::DIR_EGRESS.0 as u8;
pub const DIR_INGRESS: u8 = direction::DIR_INGRESS.0 as u8;
pub const SIDE_CLIENT: u8 = side::SIDE_CLIENT.0 as u8;
pub const SIDE_SERVER: u8 = side::SIDE_SERVER.0 as u8;
pub const OWNER_NONE: u8 = owner_source::OWNER_NONE.0 as u8;
pub const OWNER_CURRENT: u8 = owner_source::OWNER_CURRENT.0 as u8;
pub const OWNER_SOCKET: u8 = owner_source::OWNER_SOCKET.0 as u8;

/// At most this many DNS ports can be watched (`MAX_PORTS`).
pub const MAX_PORTS: usize = dnsledger_abi::MAX_PORTS.0 as usize;
/// Largest number of L3 bytes the programs can copy (`COPY_LIMIT`).
pub const COPY_LIMIT: u32 = dnsledger_abi::COPY_LIMIT.0;
/// Room reserved for IP and TCP/UDP headers in front of the DNS payload cap (`HEADER_ROOM`).
pub const HEADER_ROOM: u32 = dnsledger_abi::HEADER_ROOM.0;
/// User frames kept per stack (`STACK_DEPTH`).
pub const STACK_DEPTH: usize = dnsledger_abi::STACK_DEPTH.0 as usize;

/// Number of counters in the per-CPU `counters` map (`CNT_MAX`).
pub const COUNTERS: usize = counter::CNT_MAX.0 as usize;
pub const CNT_PKT_RB_FULL: usize = counter::CNT_PKT_RB_FULL.0 as usize;
pub const CNT_EXEC_RB_FULL: usize = counter::CNT_EXEC_RB_FULL.0 as usize;
pub const CNT_EXIT_RB_FULL: usize = counter::CNT_EXIT_RB_FULL.0 as usize;
pub const CNT_LOAD_BYTES: usize = counter::CNT_LOAD_BYTES.0 as usize;
pub const CNT_STORAGE: usize = counter::CNT_STORAGE.0 as usize;
pub const CNT_PKT_SENT: usize = counter::CNT_PKT_SENT.0 as usize;
pub const CNT_STACK_RB_FULL: usize = counter::CNT_STACK_RB_FULL.0 as usize;
pub const CNT_STACK_FAILED: usize = counter::CNT_STACK_FAILED.0 as usize;
pub const CNT_STACK_SENT: usize = counter::CNT_STACK_SENT.0 as usize;
pub const CNT_BYPASS_RB_FULL: usize = counter::CNT_BYPASS_RB_FULL.0 as usize;
pub const CNT_BYPASS_SENT: usize = counter::CNT_BYPASS_SENT.0 as usize;

/// The name each counter has in `status.json`, `dnsledger status` and the metrics, by index.
/// Built from `(index, name)` pairs so that a reordered C enum cannot mislabel a counter.
pub const COUNTER_NAMES: [&str; COUNTERS] = {
    const PAIRS: [(usize, &str); COUNTERS] = [
        (CNT_PKT_RB_FULL, "packet_ringbuf_full"),
        (CNT_EXEC_RB_FULL, "exec_ringbuf_full"),
        (CNT_EXIT_RB_FULL, "exit_ringbuf_full"),
        (CNT_LOAD_BYTES, "packet_copy_failed"),
        (CNT_STORAGE, "socket_storage_failed"),
        (CNT_PKT_SENT, "packets_sent"),
        (CNT_STACK_RB_FULL, "stack_ringbuf_full"),
        (CNT_STACK_FAILED, "stack_unwind_failed"),
        (CNT_STACK_SENT, "stacks_sent"),
        (CNT_BYPASS_RB_FULL, "bypass_ringbuf_full"),
        (CNT_BYPASS_SENT, "bypass_sent"),
    ];
    let mut names = [""; COUNTERS];
    let mut i = 0;
    while i < COUNTERS {
        let (index, name) = PAIRS[i];
        assert!(names[index].is_empty(), "two counters share an index");
        names[index] = name;
        i += 1;
    }
    names
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::skel::types::{packet_event, stack_event};

    #[test]
    fn numbers_fit_the_fields_that_carry_them() {
        // The C enums are 32 bits wide; the event header fields that carry them are 8 bits.
        for v in [
            event_kind::EVENT_PACKET.0,
            event_kind::EVENT_EXEC.0,
            event_kind::EVENT_EXIT.0,
            event_kind::EVENT_STACK.0,
            event_kind::EVENT_BYPASS.0,
            bypass_kind::BYPASS_DOH_LIKELY.0,
            direction::DIR_EGRESS.0,
            direction::DIR_INGRESS.0,
            owner_source::OWNER_SOCKET.0,
            side::SIDE_SERVER.0,
            dnsledger_abi::DNSLEDGER_EVENT_VERSION.0,
        ] {
            assert!(v <= u32::from(u8::MAX), "{v} does not fit a u8 field");
        }
        assert_ne!(DIR_EGRESS, DIR_INGRESS);
        assert_ne!(SIDE_CLIENT, SIDE_SERVER);
        // The field was padding before --serve-side: zero must keep meaning the client side.
        assert_eq!(SIDE_CLIENT, 0);
        let distinct: std::collections::BTreeSet<u8> = [
            EVENT_PACKET,
            EVENT_EXEC,
            EVENT_EXIT,
            EVENT_STACK,
            EVENT_BYPASS,
        ]
        .into();
        assert_eq!(distinct.len(), 5);
        let kinds: std::collections::BTreeSet<u8> =
            [BYPASS_DOT, BYPASS_DOQ, BYPASS_DOH_LIKELY].into();
        assert_eq!(kinds.len(), 3);
    }

    #[test]
    fn limits_agree_with_the_structs() {
        let st = stack_event::default();
        assert_eq!(st.ips.len(), STACK_DEPTH);
        assert_eq!(packet_event::default().owner.comm.len(), 16);
        assert_eq!(COPY_LIMIT, 65536 + HEADER_ROOM);
        const { assert!(MAX_PORTS > 0) };
    }

    #[test]
    fn every_counter_has_a_distinct_name() {
        let names: std::collections::BTreeSet<&str> = COUNTER_NAMES.into_iter().collect();
        assert_eq!(names.len(), COUNTERS);
        assert!(!names.contains(""));
        assert_eq!(COUNTER_NAMES[CNT_LOAD_BYTES], "packet_copy_failed");
        assert_eq!(COUNTER_NAMES[CNT_STACK_SENT], "stacks_sent");
    }
}
