#!/usr/bin/env bash
# Regenerates testdata/segments: segments written by `dnsledger import` from the public captures
# in testdata/pcap, as a collected tree of three hosts. dnsql's tests read them (dnsql must not
# depend on the recorder crate, so it cannot build them itself).
#   host-a: ordinary resolver and browser traffic
#   host-b: DNS tunnels (iodine, dns2tcp)
#   host-c: everything else (TCP, EDNS, DNSSEC, malformed, mDNS/LLMNR)
# The checked-in tree was written before segments became one per hour and before the names as
# sent (qname_case, questions_case), and the tests count on its layout (32 files, hours with
# several segments for compaction): those two columns were filled in place by
# crates/recorder/examples/add_names_as_sent.rs, with the values this script writes (checked
# equal when added). Regenerating gives 30 files and needs the tests' counts updated.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p dnsledger-recorder --bin dnsledger
bin=target/debug/dnsledger
out=testdata/segments
rm -rf "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
p=testdata/pcap
import() {
  local host=$1; shift
  "$bin" -q import --data-dir "$tmp/$host" --host "$host" --rotate-size 64KiB "$@" >/dev/null
  mkdir -p "$out"
  cp -r "$tmp/$host/segments/." "$out/"
}
import host-a "$p/dns.pcap" "$p/wikipedia.pcap" "$p/dns-udp-google.com-a-aaaa-mx.pcap" "$p/long-connection.pcap" "$p/base64-decode-5885/input.pcap"
import host-b "$p/dns-tunnel-iodine.pcap" "$p/bug-1158/input.pcap"
import host-c "$p/dns-edns-ecs.pcap" "$p/edns.pcap" "$p/edns-opts.pcap" "$p/rrsig.pcap" "$p/nsec3.pcap" \
  "$p/dns-tcp-multirequest-buffer.pcap" "$p/dnso1tcp.pcap" "$p/tkey.pcap" "$p/dns-sshfp.pcap" \
  "$p/ipv6-fragmented-dns.pcap" "$p/truncated_dns.pcap" "$p/dns-invalid-names.pcap" "$p/dns-zlip-1.pcap" \
  "$p/dns-badlabel.pcap" "$p/dynamic-update.pcap" "$p/ech.pcap" "$p/mdns.pcap"
find "$out" -type f | sort
du -sh "$out"
