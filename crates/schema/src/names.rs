//! Mnemonics of DNS codes, stored in the `rcode_name`/`qtype_name` columns by the recorder and
//! printed by the renderer: one table for both, so the columns and `dnsql show` always agree.

use std::borrow::Cow;

/// Mnemonic of a response code (IANA "DNS RCODEs"), `RCODE<n>` when unassigned.
pub fn rcode(code: u16) -> Cow<'static, str> {
    let name = match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        11 => "DSOTYPENI",
        16 => "BADVERS",
        17 => "BADKEY",
        18 => "BADTIME",
        19 => "BADMODE",
        20 => "BADNAME",
        21 => "BADALG",
        22 => "BADTRUNC",
        23 => "BADCOOKIE",
        n => return Cow::Owned(format!("RCODE{n}")),
    };
    Cow::Borrowed(name)
}

/// Mnemonic of a record type (IANA "Resource Record (RR) TYPEs"), `TYPE<n>` when unassigned.
///
/// A table of our own: hickory's `RecordType` names only about 40 types, prints
/// `Unknown(n)`-style text for the rest and maps ANAME to the private-use code 65305.
pub fn rtype(code: u16) -> Cow<'static, str> {
    let name = match code {
        1 => "A",
        2 => "NS",
        3 => "MD",
        4 => "MF",
        5 => "CNAME",
        6 => "SOA",
        7 => "MB",
        8 => "MG",
        9 => "MR",
        10 => "NULL",
        11 => "WKS",
        12 => "PTR",
        13 => "HINFO",
        14 => "MINFO",
        15 => "MX",
        16 => "TXT",
        17 => "RP",
        18 => "AFSDB",
        19 => "X25",
        20 => "ISDN",
        21 => "RT",
        22 => "NSAP",
        23 => "NSAP-PTR",
        24 => "SIG",
        25 => "KEY",
        26 => "PX",
        27 => "GPOS",
        28 => "AAAA",
        29 => "LOC",
        30 => "NXT",
        31 => "EID",
        32 => "NIMLOC",
        33 => "SRV",
        34 => "ATMA",
        35 => "NAPTR",
        36 => "KX",
        37 => "CERT",
        38 => "A6",
        39 => "DNAME",
        40 => "SINK",
        41 => "OPT",
        42 => "APL",
        43 => "DS",
        44 => "SSHFP",
        45 => "IPSECKEY",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        49 => "DHCID",
        50 => "NSEC3",
        51 => "NSEC3PARAM",
        52 => "TLSA",
        53 => "SMIMEA",
        55 => "HIP",
        56 => "NINFO",
        57 => "RKEY",
        58 => "TALINK",
        59 => "CDS",
        60 => "CDNSKEY",
        61 => "OPENPGPKEY",
        62 => "CSYNC",
        63 => "ZONEMD",
        64 => "SVCB",
        65 => "HTTPS",
        66 => "DSYNC",
        67 => "HHIT",
        68 => "BRID",
        99 => "SPF",
        100 => "UINFO",
        101 => "UID",
        102 => "GID",
        103 => "UNSPEC",
        104 => "NID",
        105 => "L32",
        106 => "L64",
        107 => "LP",
        108 => "EUI48",
        109 => "EUI64",
        128 => "NXNAME",
        249 => "TKEY",
        250 => "TSIG",
        251 => "IXFR",
        252 => "AXFR",
        253 => "MAILB",
        254 => "MAILA",
        255 => "ANY",
        256 => "URI",
        257 => "CAA",
        258 => "AVC",
        259 => "DOA",
        260 => "AMTRELAY",
        261 => "RESINFO",
        262 => "WALLET",
        263 => "CLA",
        264 => "IPN",
        32768 => "TA",
        32769 => "DLV",
        n => return Cow::Owned(format!("TYPE{n}")),
    };
    Cow::Borrowed(name)
}

/// Mnemonic of an opcode (IANA "DNS OpCodes"), `OPCODE<n>` when unassigned.
pub fn opcode(code: u8) -> Cow<'static, str> {
    let name = match code {
        0 => "QUERY",
        1 => "IQUERY",
        2 => "STATUS",
        4 => "NOTIFY",
        5 => "UPDATE",
        6 => "DSO",
        n => return Cow::Owned(format!("OPCODE{n}")),
    };
    Cow::Borrowed(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigned_and_unassigned_codes() {
        assert_eq!(rcode(3), "NXDOMAIN");
        assert_eq!(rcode(23), "BADCOOKIE");
        assert_eq!(rcode(12), "RCODE12");
        assert_eq!(rtype(65), "HTTPS");
        assert_eq!(rtype(65534), "TYPE65534");
        assert_eq!(opcode(5), "UPDATE");
        assert_eq!(opcode(3), "OPCODE3");
        assert!(matches!(rtype(28), Cow::Borrowed("AAAA")));
    }
}
