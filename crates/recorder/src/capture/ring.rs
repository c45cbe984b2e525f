//! Ring-buffer records into the pipeline: [`RingFeed`] dispatches each record of the kernel's
//! ring buffer (packets and encrypted-DNS bypass events to the pipeline, exec/exit to the
//! process table, `--stacks` stacks to the symbolizer) for `record` and for a standalone
//! `snoop`/`top`.

use std::collections::HashMap;
use std::sync::Arc;

use super::events::{self, Clock, Event};
use super::procs::ProcessTable;
use super::stacks::StackSymbolizer;
use super::{Direction, KernelOwner};
use crate::pair::{Attributor, ProcessAttrs};
use crate::pipeline::Pipeline;

/// Attribution for live capture: the process table, asked at the time of the packet.
pub struct LiveAttribution {
    pub table: ProcessTable,
    /// Time of the packet being decoded (UTC ns).
    pub now_ns: i64,
}

impl Attributor for LiveAttribution {
    fn attrs(&mut self, owner: &KernelOwner) -> ProcessAttrs {
        let info = self.table.lookup(owner, self.now_ns);
        ProcessAttrs {
            ppid: info.ppid,
            exe: info.exe,
            cmdline: info.cmdline,
            cgroup_path: info.cgroup_path,
            container_id: info.container_id,
        }
    }
}

/// Stacks waiting for their packet, at most (a stack whose packet was lost in the kernel is
/// replaced by its thread's next one, but threads come and go).
const MAX_PENDING_STACKS: usize = 4096;

/// Feeds ring-buffer records to a live pipeline, for `record` and for a standalone `snoop`/`top`:
/// packets, process exec/exit, and the user stacks of `--stacks`, each joined to the egress
/// packet it precedes.
#[derive(Default)]
pub struct RingFeed {
    /// Made at the first stack event (only `record --stacks` loads the stack programs).
    symbolizer: Option<StackSymbolizer>,
    /// Symbolized stacks waiting for the egress packet they precede, by thread id, with the
    /// socket cookie they were taken for.
    pending_stacks: HashMap<u32, (u64, Arc<[String]>)>,
    /// Records that did not parse (skipped).
    pub bad_events: u64,
}

impl RingFeed {
    /// Stacks symbolized, and of those, ones whose process was gone by then.
    pub fn stack_counts(&self) -> (u64, u64) {
        self.symbolizer
            .as_ref()
            .map_or((0, 0), |s| (s.symbolized, s.process_gone))
    }

    /// Hands one ring-buffer record to `pipeline`; `clock` converts its boot-time stamp.
    pub fn record(
        &mut self,
        pipeline: &mut Pipeline<LiveAttribution>,
        record: &[u8],
        clock: &Clock,
    ) {
        match events::parse(record, clock) {
            Ok(Event::Packet(pkt)) => {
                pipeline.attr_mut().now_ns = pkt.ts_ns;
                // Only the egress packet the stack event precedes takes it (an ingress packet
                // may carry the same thread as socket owner).
                let stack = match pkt.owner {
                    Some(o)
                        if pkt.direction == Direction::Egress
                            && !self.pending_stacks.is_empty() =>
                    {
                        self.pending_stacks
                            .remove(&o.tid)
                            .filter(|(cookie, _)| *cookie == pkt.sock_cookie)
                            .map(|(_, frames)| frames)
                    }
                    _ => None,
                };
                pipeline.packet_with_stack(&pkt, stack);
            }
            Ok(Event::Stack(st)) => {
                if self.pending_stacks.len() >= MAX_PENDING_STACKS {
                    self.pending_stacks.clear();
                }
                let frames = self
                    .symbolizer
                    .get_or_insert_with(StackSymbolizer::new)
                    .symbolize(st.pid, &st.ips);
                self.pending_stacks.insert(st.tid, (st.sock_cookie, frames));
            }
            Ok(Event::Bypass(b)) => {
                pipeline.attr_mut().now_ns = b.ts_ns;
                pipeline.bypass(&b);
            }
            Ok(Event::LookupStart { tid, ts_ns }) => pipeline.lookup_start(tid, ts_ns),
            Ok(Event::Lookup(l)) => {
                pipeline.attr_mut().now_ns = l.end_ns;
                pipeline.lookup(&l);
            }
            Ok(Event::Exec(e)) => pipeline.attr_mut().table.exec(&e),
            Ok(Event::Exit { pid, ts_ns }) => {
                if let Some(s) = &mut self.symbolizer {
                    s.forget(pid);
                }
                pipeline.attr_mut().table.exit(pid, ts_ns)
            }
            Err(e) => {
                self.bad_events += 1;
                tracing::debug!("skipping ring buffer record: {e}");
            }
        }
    }
}
