//! `dnsledger snoop --detailed`: each live transaction in full, decoded like `dig`, with the
//! same renderer (`dnsledger-render`) as `dnsql show`.

use std::io::{self, Write};

use dnsledger_render::{Transcript, write_transaction};

use crate::live::LiveTx;
use crate::segment::format_rfc3339_ns;

/// The view's input for a live transaction.
pub fn transcript(t: &LiveTx) -> Transcript {
    let (query_raw, response_raw) = t.raw();
    Transcript {
        qname: t.qname.clone(),
        qtype_name: t.qtype.clone(),
        hostname: Some(t.hostname.clone()),
        ts: Some(format_rfc3339_ns(t.ts)),
        status: Some(t.status.clone()),
        transport: Some(t.transport.clone()),
        ip_version: Some(t.ip_version.to_string()),
        server_ip: Some(t.server_ip.clone()),
        server_port: Some(u64::from(t.server_port)),
        client_ip: Some(t.client_ip.clone()),
        client_port: Some(u64::from(t.client_port)),
        latency_ns: t.latency_ns,
        pid: t.pid.map(u64::from),
        ppid: t.ppid.map(u64::from),
        uid: t.uid.map(u64::from),
        comm: t.comm.clone(),
        exe: t.exe.clone(),
        container_id: t.container_id.clone(),
        cmdline: t.cmdline.clone(),
        parse_error: t.parse_error.clone(),
        query_raw,
        query_size: t.query_size.map(u64::from),
        response_raw,
        response_size: t.response_size.map(u64::from),
    }
}

/// One transaction, then a blank line.
pub fn write_detailed(out: &mut dyn Write, t: &LiveTx) -> io::Result<()> {
    write_transaction(&transcript(t), out)?;
    writeln!(out)
}
