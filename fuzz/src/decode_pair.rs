//! Target `decode_pair`: the whole user-space path on arbitrary packets:
//! `Decoder::push`/`expire`/`finish` -> `Pairer::push`/`expire`/`flush` ->
//! `TransactionBatchBuilder::append`/`finish`.
//!
//! Input format: see [`parse_pipeline_input`] (a configuration byte, a port, then
//! length-prefixed L3 packets with direction, owner, cookie, wire length and time step).

use std::sync::Arc;

use dnsledger::decode::Decoder;
use dnsledger::pair::{NoAttribution, PairConfig, Pairer};
use dnsledger_schema::{TransactionBatchBuilder, status};

use crate::{check_message, check_name, check_stats, parse_pipeline_input};

/// Checks one input (see [`parse_pipeline_input`]); panics on a violated invariant.
pub fn run(input: &[u8]) {
    let (cfg, records) = parse_pipeline_input(input);
    let mut decoder = Decoder::with_limits(cfg.ports.clone(), cfg.limits);
    let mut pairer = Pairer::new(PairConfig {
        timeout_ns: cfg.timeout_ns,
        // Small, so that eviction is exercised too.
        max_pending: 64,
        keep_raw: cfg.keep_raw,
        hostname: Arc::from("fuzz-host"),
        boot_id: Some(Arc::from("00000000-0000-0000-0000-000000000000")),
    });
    let mut attr = NoAttribution;
    let mut all_msgs = Vec::new();
    let mut txs = Vec::new();
    let (mut queries, mut responses) = (0usize, 0usize);
    let mut msgs = Vec::new();
    let mut feed = |msgs: &mut Vec<_>, pairer: &mut Pairer, txs: &mut Vec<_>| {
        for m in msgs.drain(..) {
            check_message(&cfg.ports, &m);
            all_msgs.push(m.clone());
            if m.from_client {
                queries += 1;
            } else {
                responses += 1;
            }
            pairer.push(m, &mut attr, txs);
        }
    };
    for r in &records {
        decoder.push(&r.raw(), &mut msgs);
        if r.expire {
            decoder.expire(r.ts_ns, cfg.idle_ns, &mut msgs);
        }
        feed(&mut msgs, &mut pairer, &mut txs);
        if r.expire {
            pairer.expire(r.ts_ns, &mut txs);
        }
    }
    decoder.finish(&mut msgs);
    feed(&mut msgs, &mut pairer, &mut txs);
    pairer.flush(&mut txs);
    assert_eq!(pairer.pending(), 0);
    assert!(pairer.low_watermark().is_none());
    check_stats(&decoder.stats(), &all_msgs);

    // Every query ends in exactly one row, and so does every response.
    let count = |s: &str| txs.iter().filter(|t| t.status == s).count();
    let (answered, unanswered, unsolicited) = (
        count(status::ANSWERED),
        count(status::UNANSWERED),
        count(status::UNSOLICITED),
    );
    assert_eq!(
        answered + unanswered + unsolicited,
        txs.len(),
        "unknown status"
    );
    assert_eq!(answered + unanswered, queries, "queries vs rows");
    assert_eq!(answered + unsolicited, responses, "responses vs rows");
    for t in &txs {
        match t.status {
            s if s == status::ANSWERED => {
                assert!(t.query_ts.is_some() && t.response_ts.is_some() && t.latency_ns.is_some())
            }
            s if s == status::UNANSWERED => {
                assert!(t.query_ts.is_some() && t.response_ts.is_none())
            }
            _ => assert!(t.query_ts.is_none() && t.response_ts.is_some()),
        }
        if let Some(q) = &t.qname {
            check_name(q);
        }
        if !cfg.keep_raw {
            assert!(t.query_raw.is_none() && t.response_raw.is_none());
        }
    }

    let mut builder = TransactionBatchBuilder::new();
    for t in &txs {
        builder.append(t);
    }
    let batch = builder.finish().expect("batch of fuzzed transactions");
    assert_eq!(batch.num_rows(), txs.len());
}
