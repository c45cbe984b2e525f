//! `dnsledger snoop --detailed`: each live transaction in full, decoded like `dig`, with the
//! same renderer (`dnsledger-render`) as `dnsql show`.

use std::io::{self, Write};

use dnsledger_render::{Transcript, write_transaction};

use crate::live::LiveTx;
use crate::store::segment::format_rfc3339_ns;

/// The view's input for a live transaction.
pub fn transcript(t: &LiveTx) -> Transcript {
    let (query_raw, response_raw) = t.raw();
    Transcript {
        qname: t.qname.clone(),
        qname_sent: t.qname_sent.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn live_transaction_renders_like_dnsql_show() {
        // id 0x1234, RD, one question: a.test A IN.
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x01a\x04test\x00\x00\x01\x00\x01");
        let t = LiveTx {
            ts: 1_700_000_000_000_000_000,
            status: "unanswered".into(),
            hostname: "h".into(),
            pid: Some(7),
            comm: Some("dig".into()),
            qname: Some("a.test".into()),
            qtype: Some("A".into()),
            transport: "udp".into(),
            ip_version: 4,
            server_ip: "127.0.0.1".into(),
            server_port: 53,
            client_ip: "127.0.0.1".into(),
            client_port: 40000,
            query_raw: Some(base64::engine::general_purpose::STANDARD.encode(&q)),
            ..Default::default()
        };
        let mut out = Vec::new();
        write_detailed(&mut out, &t).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with(";; TRANSACTION a.test A on h\n"), "{text}");
        assert!(
            text.contains(";; WHEN: 2023-11-14T22:13:20.000000000Z  status: unanswered"),
            "{text}"
        );
        assert!(
            text.contains(";; SERVER: 127.0.0.1#53 (UDP, IPv4)  CLIENT: 127.0.0.1#40000"),
            "{text}"
        );
        assert!(
            text.contains(";; PROCESS: pid 7 ppid - uid - comm dig exe - container -"),
            "{text}"
        );
        assert!(
            text.contains("opcode: QUERY, status: NOERROR, id: 4660"),
            "{text}"
        );
        assert!(
            text.contains(";; QUESTION SECTION:\n;a.test.\t\tIN\tA"),
            "{text}"
        );
        assert!(text.contains(";; RESPONSE: none (unanswered)"), "{text}");
    }
}
