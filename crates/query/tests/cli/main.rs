//! dnsql end to end.
