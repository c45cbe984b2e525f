//! One row per DNS transaction, and a builder turning thousands of rows into a `RecordBatch`.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Int64Builder, ListBuilder, StringBuilder,
    StringDictionaryBuilder, StructBuilder, TimestampNanosecondBuilder, UInt8Builder,
    UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::ArrowError;

use crate::{derived, schema};

/// One question of a DNS message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

/// One answer-section record of a DNS response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    /// Record type mnemonic (`A`, `CNAME`, `TYPE65534`, ...).
    pub rtype: String,
    pub ttl: u32,
    /// Presentation-format rdata.
    pub data: String,
}

/// A local process whose query a local stub resolver forwarded upstream (requester behind a
/// local stub, `stub-link`): one element of the `requester_*` columns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requester {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<Arc<str>>,
}

/// One row of a segment. Field meanings follow the column of the same name ([`crate::col`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transaction {
    pub ts: i64,
    pub query_ts: Option<i64>,
    pub response_ts: Option<i64>,
    pub latency_ns: Option<i64>,
    pub status: &'static str,
    pub hostname: Arc<str>,
    pub boot_id: Option<Arc<str>>,
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub ppid: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub comm: Option<String>,
    pub exe: Option<Arc<str>>,
    pub cmdline: Option<Arc<str>>,
    pub cgroup_id: Option<u64>,
    pub cgroup_path: Option<Arc<str>>,
    pub container_id: Option<Arc<str>>,
    pub netns: Option<u32>,
    pub transport: &'static str,
    pub ip_version: u8,
    pub client_ip: String,
    pub client_port: u16,
    pub server_ip: String,
    pub server_port: u16,
    pub dns_id: Option<u16>,
    pub opcode: Option<u8>,
    pub rcode: Option<u16>,
    pub rcode_name: Option<String>,
    pub aa: Option<bool>,
    pub tc: Option<bool>,
    pub rd: Option<bool>,
    pub ra: Option<bool>,
    pub ad: Option<bool>,
    pub cd: Option<bool>,
    pub qname: Option<String>,
    pub qtype: Option<u16>,
    pub qtype_name: Option<String>,
    pub qclass: Option<u16>,
    pub questions: Option<Vec<Question>>,
    pub qdcount: Option<u16>,
    pub ancount: Option<u16>,
    pub nscount: Option<u16>,
    pub arcount: Option<u16>,
    pub registered_domain: Option<String>,
    pub answers: Option<Vec<Answer>>,
    pub answer_ips: Option<Vec<String>>,
    pub edns_udp_size: Option<u16>,
    pub edns_version: Option<u8>,
    pub edns_do: Option<bool>,
    pub edns_ecs: Option<String>,
    pub edns_cookie: Option<bool>,
    pub ede_code: Option<u16>,
    pub ede_text: Option<String>,
    pub query_size: Option<u32>,
    pub response_size: Option<u32>,
    pub query_raw: Option<Vec<u8>>,
    pub response_raw: Option<Vec<u8>>,
    pub parse_error: Option<String>,
    /// Symbolized frames of the sender's user stack, innermost first.
    pub stack: Option<Arc<[String]>>,
    /// The first question's name as sent when it differs from [`qname`](Self::qname) (has an
    /// upper-case letter); `None` otherwise.
    pub qname_case: Option<String>,
    /// Every question's name as sent, for messages with more than one question of which one
    /// has an upper-case letter; `None` otherwise.
    pub questions_case: Option<Vec<String>>,
    // --serve-side
    /// Which end the host was ([`crate::side`]); `None` when unknown (imported captures).
    pub side: Option<&'static str>,
    // Requester behind a local stub (`stub-link`).
    /// On a query a local stub sent upstream: the local clients it was asking for (the
    /// `requester_pids`, `requester_comms` and `requester_exes` columns, in this order).
    pub requesters: Option<Vec<Requester>>,
    /// On a query to a local stub: [`crate::stub_cache`] `miss` or `hit`.
    pub stub_cache: Option<&'static str>,
    // libc-level lookups (see the `lookup_*` columns).
    pub lookup_fn: Option<&'static str>,
    pub lookup_family: Option<u8>,
    pub lookup_error: Option<String>,
    pub lookup_local: Option<bool>,
    pub lookup_id: Option<u64>,
}

type Dict = StringDictionaryBuilder<Int32Type>;

/// Accumulates [`Transaction`]s column by column; [`finish`](Self::finish) yields a batch with
/// [`crate::schema`] and resets the builder for the next batch.
pub struct TransactionBatchBuilder {
    rows: usize,
    ts: TimestampNanosecondBuilder,
    query_ts: TimestampNanosecondBuilder,
    response_ts: TimestampNanosecondBuilder,
    latency_ns: Int64Builder,
    status: Dict,
    hostname: Dict,
    boot_id: Dict,
    pid: UInt32Builder,
    tid: UInt32Builder,
    ppid: UInt32Builder,
    uid: UInt32Builder,
    gid: UInt32Builder,
    comm: Dict,
    exe: Dict,
    cmdline: Dict,
    cgroup_id: UInt64Builder,
    cgroup_path: Dict,
    container_id: Dict,
    netns: UInt32Builder,
    transport: Dict,
    ip_version: UInt8Builder,
    client_ip: Dict,
    client_port: UInt16Builder,
    server_ip: Dict,
    server_port: UInt16Builder,
    dns_id: UInt16Builder,
    opcode: UInt8Builder,
    rcode: UInt16Builder,
    rcode_name: Dict,
    aa: BooleanBuilder,
    tc: BooleanBuilder,
    rd: BooleanBuilder,
    ra: BooleanBuilder,
    ad: BooleanBuilder,
    cd: BooleanBuilder,
    qname: StringBuilder,
    qtype: UInt16Builder,
    qtype_name: Dict,
    qclass: UInt16Builder,
    questions: ListBuilder<StructBuilder>,
    qdcount: UInt16Builder,
    ancount: UInt16Builder,
    nscount: UInt16Builder,
    arcount: UInt16Builder,
    registered_domain: StringBuilder,
    answers: ListBuilder<StructBuilder>,
    answer_ips: ListBuilder<StringBuilder>,
    edns_udp_size: UInt16Builder,
    edns_version: UInt8Builder,
    edns_do: BooleanBuilder,
    edns_ecs: StringBuilder,
    edns_cookie: BooleanBuilder,
    ede_code: UInt16Builder,
    ede_text: StringBuilder,
    query_size: UInt32Builder,
    response_size: UInt32Builder,
    query_raw: BinaryBuilder,
    response_raw: BinaryBuilder,
    parse_error: StringBuilder,
    stack: ListBuilder<StringBuilder>,
    qname_case: StringBuilder,
    questions_case: ListBuilder<StringBuilder>,
    // --serve-side
    side: Dict,
    // Requester behind a local stub (`stub-link`).
    requester_pids: ListBuilder<UInt32Builder>,
    requester_comms: ListBuilder<StringBuilder>,
    requester_exes: ListBuilder<StringBuilder>,
    stub_cache: Dict,
    // libc-level lookups.
    lookup_fn: Dict,
    lookup_family: UInt8Builder,
    lookup_error: Dict,
    lookup_local: BooleanBuilder,
    lookup_id: UInt64Builder,
    // Raw messages with the DNS ID XORed out (schema version 3).
    query_raw_x: BinaryBuilder,
    response_raw_x: BinaryBuilder,
    /// The bytes of the message being XORed (reused row to row).
    scratch: Vec<u8>,
}

impl Default for TransactionBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn list_builder_for(column: &str) -> ListBuilder<StructBuilder> {
    let field = schema()
        .field_with_name(column)
        .expect("column exists in the schema")
        .clone();
    let arrow_schema::DataType::List(item) = field.data_type() else {
        unreachable!("{column} is a list column")
    };
    let arrow_schema::DataType::Struct(fields) = item.data_type() else {
        unreachable!("{column} is a list of structs")
    };
    ListBuilder::new(StructBuilder::from_fields(fields.clone(), 0)).with_field(item.clone())
}

fn opt_dict(b: &mut Dict, v: Option<&str>) {
    match v {
        Some(s) => b.append_value(s),
        None => b.append_null(),
    }
}

impl TransactionBatchBuilder {
    pub fn new() -> Self {
        Self {
            rows: 0,
            ts: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            query_ts: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            response_ts: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            latency_ns: Int64Builder::new(),
            status: Dict::new(),
            hostname: Dict::new(),
            boot_id: Dict::new(),
            pid: UInt32Builder::new(),
            tid: UInt32Builder::new(),
            ppid: UInt32Builder::new(),
            uid: UInt32Builder::new(),
            gid: UInt32Builder::new(),
            comm: Dict::new(),
            exe: Dict::new(),
            cmdline: Dict::new(),
            cgroup_id: UInt64Builder::new(),
            cgroup_path: Dict::new(),
            container_id: Dict::new(),
            netns: UInt32Builder::new(),
            transport: Dict::new(),
            ip_version: UInt8Builder::new(),
            client_ip: Dict::new(),
            client_port: UInt16Builder::new(),
            server_ip: Dict::new(),
            server_port: UInt16Builder::new(),
            dns_id: UInt16Builder::new(),
            opcode: UInt8Builder::new(),
            rcode: UInt16Builder::new(),
            rcode_name: Dict::new(),
            aa: BooleanBuilder::new(),
            tc: BooleanBuilder::new(),
            rd: BooleanBuilder::new(),
            ra: BooleanBuilder::new(),
            ad: BooleanBuilder::new(),
            cd: BooleanBuilder::new(),
            qname: StringBuilder::new(),
            qtype: UInt16Builder::new(),
            qtype_name: Dict::new(),
            qclass: UInt16Builder::new(),
            questions: list_builder_for(crate::col::QUESTIONS),
            qdcount: UInt16Builder::new(),
            ancount: UInt16Builder::new(),
            nscount: UInt16Builder::new(),
            arcount: UInt16Builder::new(),
            registered_domain: StringBuilder::new(),
            answers: list_builder_for(crate::col::ANSWERS),
            answer_ips: ListBuilder::new(StringBuilder::new()),
            edns_udp_size: UInt16Builder::new(),
            edns_version: UInt8Builder::new(),
            edns_do: BooleanBuilder::new(),
            edns_ecs: StringBuilder::new(),
            edns_cookie: BooleanBuilder::new(),
            ede_code: UInt16Builder::new(),
            ede_text: StringBuilder::new(),
            query_size: UInt32Builder::new(),
            response_size: UInt32Builder::new(),
            query_raw: BinaryBuilder::new(),
            response_raw: BinaryBuilder::new(),
            parse_error: StringBuilder::new(),
            stack: ListBuilder::new(StringBuilder::new()),
            qname_case: StringBuilder::new(),
            questions_case: ListBuilder::new(StringBuilder::new()),
            side: Dict::new(),
            requester_pids: ListBuilder::new(UInt32Builder::new()),
            requester_comms: ListBuilder::new(StringBuilder::new()),
            requester_exes: ListBuilder::new(StringBuilder::new()),
            stub_cache: Dict::new(),
            lookup_fn: Dict::new(),
            lookup_family: UInt8Builder::new(),
            lookup_error: Dict::new(),
            lookup_local: BooleanBuilder::new(),
            lookup_id: UInt64Builder::new(),
            query_raw_x: BinaryBuilder::new(),
            response_raw_x: BinaryBuilder::new(),
            scratch: Vec::new(),
        }
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn append(&mut self, t: &Transaction) {
        self.rows += 1;
        self.ts.append_value(t.ts);
        // Schema version 2: what the rules of [`crate::derived`] give is left NULL.
        let query_ts = t
            .query_ts
            .filter(|&q| Some(q) != derived::query_ts(t.ts, t.status));
        self.query_ts.append_option(query_ts);
        self.response_ts.append_option(t.response_ts);
        let latency_ns = t
            .latency_ns
            .filter(|&l| Some(l) != derived::latency_ns(t.query_ts, t.response_ts));
        self.latency_ns.append_option(latency_ns);
        self.status.append_value(t.status);
        self.hostname.append_value(&*t.hostname);
        opt_dict(&mut self.boot_id, t.boot_id.as_deref());
        self.pid.append_option(t.pid);
        self.tid.append_option(t.tid);
        self.ppid.append_option(t.ppid);
        self.uid.append_option(t.uid);
        self.gid.append_option(t.gid);
        opt_dict(&mut self.comm, t.comm.as_deref());
        opt_dict(&mut self.exe, t.exe.as_deref());
        opt_dict(&mut self.cmdline, t.cmdline.as_deref());
        self.cgroup_id.append_option(t.cgroup_id);
        opt_dict(&mut self.cgroup_path, t.cgroup_path.as_deref());
        opt_dict(&mut self.container_id, t.container_id.as_deref());
        self.netns.append_option(t.netns);
        self.transport.append_value(t.transport);
        self.ip_version.append_value(t.ip_version);
        self.client_ip.append_value(&t.client_ip);
        self.client_port.append_value(t.client_port);
        self.server_ip.append_value(&t.server_ip);
        self.server_port.append_value(t.server_port);
        self.dns_id.append_option(t.dns_id);
        self.opcode.append_option(t.opcode);
        self.rcode.append_option(t.rcode);
        opt_dict(&mut self.rcode_name, t.rcode_name.as_deref());
        self.aa.append_option(t.aa);
        self.tc.append_option(t.tc);
        self.rd.append_option(t.rd);
        self.ra.append_option(t.ra);
        self.ad.append_option(t.ad);
        self.cd.append_option(t.cd);
        self.qname.append_option(t.qname.as_deref());
        self.qtype.append_option(t.qtype);
        opt_dict(&mut self.qtype_name, t.qtype_name.as_deref());
        self.qclass.append_option(t.qclass);
        let questions = t.questions.as_ref().filter(|qs| {
            !derived::questions_derivable(t.status, t.qname.as_deref(), t.qtype, t.qclass, Some(qs))
        });
        match questions {
            Some(qs) => {
                let s = self.questions.values();
                for q in qs {
                    field_str(s, 0).append_value(&q.name);
                    field_u16(s, 1).append_value(q.qtype);
                    field_u16(s, 2).append_value(q.qclass);
                    s.append(true);
                }
                self.questions.append(true);
            }
            None => self.questions.append(false),
        }
        self.qdcount.append_option(t.qdcount);
        self.ancount.append_option(t.ancount);
        self.nscount.append_option(t.nscount);
        self.arcount.append_option(t.arcount);
        self.registered_domain
            .append_option(t.registered_domain.as_deref());
        match &t.answers {
            Some(answers) => {
                let s = self.answers.values();
                for a in answers {
                    field_str(s, 0).append_value(&a.name);
                    s.field_builder::<Dict>(1)
                        .expect("answers.type is a dictionary")
                        .append_value(&a.rtype);
                    s.field_builder::<UInt32Builder>(2)
                        .expect("answers.ttl is u32")
                        .append_value(a.ttl);
                    field_str(s, 3).append_value(&a.data);
                    s.append(true);
                }
                self.answers.append(true);
            }
            None => self.answers.append(false),
        }
        let answer_ips = t.answer_ips.as_ref().filter(|ips| {
            !derived::answer_ips_derivable(t.status, t.answers.as_deref(), Some(ips))
        });
        match answer_ips {
            Some(ips) => {
                for ip in ips {
                    self.answer_ips.values().append_value(ip);
                }
                self.answer_ips.append(true);
            }
            None => self.answer_ips.append(false),
        }
        self.edns_udp_size.append_option(t.edns_udp_size);
        self.edns_version.append_option(t.edns_version);
        self.edns_do.append_option(t.edns_do);
        self.edns_ecs.append_option(t.edns_ecs.as_deref());
        self.edns_cookie.append_option(t.edns_cookie);
        self.ede_code.append_option(t.ede_code);
        self.ede_text.append_option(t.ede_text.as_deref());
        self.query_size.append_option(t.query_size);
        self.response_size.append_option(t.response_size);
        // Schema version 3: a message whose ID can be XORed out goes to its `_x` column.
        for (raw, stored, xored) in [
            (&t.query_raw, &mut self.query_raw, &mut self.query_raw_x),
            (
                &t.response_raw,
                &mut self.response_raw,
                &mut self.response_raw_x,
            ),
        ] {
            match raw.as_deref() {
                Some(m) => match derived::raw_xor_key(m, t.dns_id) {
                    Some(key) => {
                        self.scratch.clear();
                        self.scratch.extend_from_slice(m);
                        derived::xor_id(&mut self.scratch, key);
                        stored.append_null();
                        xored.append_value(&self.scratch);
                    }
                    None => {
                        stored.append_value(m);
                        xored.append_null();
                    }
                },
                None => {
                    stored.append_null();
                    xored.append_null();
                }
            }
        }
        self.parse_error.append_option(t.parse_error.as_deref());
        match &t.stack {
            Some(frames) => {
                for f in frames.iter() {
                    self.stack.values().append_value(f);
                }
                self.stack.append(true);
            }
            None => self.stack.append(false),
        }
        self.qname_case.append_option(t.qname_case.as_deref());
        match &t.questions_case {
            Some(names) => {
                for n in names {
                    self.questions_case.values().append_value(n);
                }
                self.questions_case.append(true);
            }
            None => self.questions_case.append(false),
        }
        self.side.append_option(t.side);
        match &t.requesters {
            Some(reqs) => {
                for r in reqs {
                    self.requester_pids.values().append_value(r.pid);
                    self.requester_comms.values().append_value(&r.comm);
                    self.requester_exes.values().append_option(r.exe.as_deref());
                }
                self.requester_pids.append(true);
                self.requester_comms.append(true);
                self.requester_exes.append(true);
            }
            None => {
                self.requester_pids.append(false);
                self.requester_comms.append(false);
                self.requester_exes.append(false);
            }
        }
        self.stub_cache.append_option(t.stub_cache);
        self.lookup_fn.append_option(t.lookup_fn);
        self.lookup_family.append_option(t.lookup_family);
        self.lookup_error.append_option(t.lookup_error.as_deref());
        self.lookup_local.append_option(t.lookup_local);
        self.lookup_id.append_option(t.lookup_id);
    }

    /// Builds the batch and resets the builder.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.query_ts.finish()),
            Arc::new(self.response_ts.finish()),
            Arc::new(self.latency_ns.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.hostname.finish()),
            Arc::new(self.boot_id.finish()),
            Arc::new(self.pid.finish()),
            Arc::new(self.tid.finish()),
            Arc::new(self.ppid.finish()),
            Arc::new(self.uid.finish()),
            Arc::new(self.gid.finish()),
            Arc::new(self.comm.finish()),
            Arc::new(self.exe.finish()),
            Arc::new(self.cmdline.finish()),
            Arc::new(self.cgroup_id.finish()),
            Arc::new(self.cgroup_path.finish()),
            Arc::new(self.container_id.finish()),
            Arc::new(self.netns.finish()),
            Arc::new(self.transport.finish()),
            Arc::new(self.ip_version.finish()),
            Arc::new(self.client_ip.finish()),
            Arc::new(self.client_port.finish()),
            Arc::new(self.server_ip.finish()),
            Arc::new(self.server_port.finish()),
            Arc::new(self.dns_id.finish()),
            Arc::new(self.opcode.finish()),
            Arc::new(self.rcode.finish()),
            Arc::new(self.rcode_name.finish()),
            Arc::new(self.aa.finish()),
            Arc::new(self.tc.finish()),
            Arc::new(self.rd.finish()),
            Arc::new(self.ra.finish()),
            Arc::new(self.ad.finish()),
            Arc::new(self.cd.finish()),
            Arc::new(self.qname.finish()),
            Arc::new(self.qtype.finish()),
            Arc::new(self.qtype_name.finish()),
            Arc::new(self.qclass.finish()),
            Arc::new(self.questions.finish()),
            Arc::new(self.qdcount.finish()),
            Arc::new(self.ancount.finish()),
            Arc::new(self.nscount.finish()),
            Arc::new(self.arcount.finish()),
            Arc::new(self.registered_domain.finish()),
            Arc::new(self.answers.finish()),
            Arc::new(self.answer_ips.finish()),
            Arc::new(self.edns_udp_size.finish()),
            Arc::new(self.edns_version.finish()),
            Arc::new(self.edns_do.finish()),
            Arc::new(self.edns_ecs.finish()),
            Arc::new(self.edns_cookie.finish()),
            Arc::new(self.ede_code.finish()),
            Arc::new(self.ede_text.finish()),
            Arc::new(self.query_size.finish()),
            Arc::new(self.response_size.finish()),
            Arc::new(self.query_raw.finish()),
            Arc::new(self.response_raw.finish()),
            Arc::new(self.parse_error.finish()),
            Arc::new(self.stack.finish()),
            Arc::new(self.qname_case.finish()),
            Arc::new(self.questions_case.finish()),
            Arc::new(self.side.finish()),
            Arc::new(self.requester_pids.finish()),
            Arc::new(self.requester_comms.finish()),
            Arc::new(self.requester_exes.finish()),
            Arc::new(self.stub_cache.finish()),
            Arc::new(self.lookup_fn.finish()),
            Arc::new(self.lookup_family.finish()),
            Arc::new(self.lookup_error.finish()),
            Arc::new(self.lookup_local.finish()),
            Arc::new(self.lookup_id.finish()),
            Arc::new(self.query_raw_x.finish()),
            Arc::new(self.response_raw_x.finish()),
        ];
        RecordBatch::try_new(schema(), columns)
    }
}

fn field_str(s: &mut StructBuilder, i: usize) -> &mut StringBuilder {
    s.field_builder::<StringBuilder>(i)
        .expect("struct field is a string builder")
}

fn field_u16(s: &mut StructBuilder, i: usize) -> &mut UInt16Builder {
    s.field_builder::<UInt16Builder>(i)
        .expect("struct field is a u16 builder")
}

/// Reads row `i` of a batch with (a prefix-compatible version of) [`crate::schema`] back into a
/// [`Transaction`]: the inverse of [`TransactionBatchBuilder::append`]. Columns missing from the
/// batch read as null (older schema versions). Used to re-write spooled rows.
pub fn transaction_at(batch: &RecordBatch, i: usize) -> Transaction {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_array::{Array, GenericListArray, StructArray};

    let get = |name: &str| batch.column_by_name(name).filter(|c| c.is_valid(i));
    let string = |name: &str| -> Option<String> {
        let c = get(name)?;
        match c.data_type() {
            arrow_schema::DataType::Utf8 => Some(c.as_string::<i32>().value(i).to_string()),
            arrow_schema::DataType::Dictionary(_, _) => {
                let d = c.as_dictionary::<Int32Type>();
                let key = d.keys().value(i) as usize;
                Some(d.values().as_string::<i32>().value(key).to_string())
            }
            _ => None,
        }
    };
    fn prim<T: arrow_array::ArrowPrimitiveType>(
        c: Option<&ArrayRef>,
        i: usize,
    ) -> Option<T::Native> {
        c.and_then(|c| c.as_primitive_opt::<T>())
            .map(|a| a.value(i))
    }
    let boolean = |name: &str| get(name).and_then(|c| c.as_boolean_opt().map(|a| a.value(i)));
    let binary =
        |name: &str| get(name).and_then(|c| c.as_binary_opt::<i32>().map(|a| a.value(i).to_vec()));
    let list_structs = |name: &str| -> Option<StructArray> {
        let l: &GenericListArray<i32> = get(name)?.as_list_opt::<i32>()?;
        Some(l.value(i).as_struct().clone())
    };
    let arc = |name: &str| string(name).map(|s| Arc::<str>::from(s.as_str()));
    let statik = |v: Option<String>, known: &[&'static str]| -> &'static str {
        v.and_then(|v| known.iter().find(|k| **k == v).copied())
            .unwrap_or("")
    };
    use crate::col as c;
    let questions = list_structs(c::QUESTIONS).map(|s| {
        let names = s.column(0).as_string::<i32>();
        let types = s.column(1).as_primitive::<UInt16Type>();
        let classes = s.column(2).as_primitive::<UInt16Type>();
        (0..s.len())
            .map(|j| Question {
                name: names.value(j).to_string(),
                qtype: types.value(j),
                qclass: classes.value(j),
            })
            .collect()
    });
    let answers = list_structs(c::ANSWERS).map(|s| {
        let names = s.column(0).as_string::<i32>();
        let types = s.column(1).as_dictionary::<Int32Type>();
        let type_values = types.values().as_string::<i32>();
        let ttls = s.column(2).as_primitive::<UInt32Type>();
        let data = s.column(3).as_string::<i32>();
        (0..s.len())
            .map(|j| Answer {
                name: names.value(j).to_string(),
                rtype: type_values
                    .value(types.keys().value(j) as usize)
                    .to_string(),
                ttl: ttls.value(j),
                data: data.value(j).to_string(),
            })
            .collect()
    });
    let strings = |name: &str| -> Option<Vec<String>> {
        let l = get(name)?.as_list_opt::<i32>()?;
        let v = l.value(i);
        let s = v.as_string::<i32>();
        Some((0..s.len()).map(|j| s.value(j).to_string()).collect())
    };
    let answer_ips = strings(c::ANSWER_IPS);
    let status = statik(
        string(c::STATUS),
        &[
            crate::status::ANSWERED,
            crate::status::UNANSWERED,
            crate::status::UNSOLICITED,
            crate::status::BYPASS,
            crate::status::LOOKUP,
        ],
    );
    let ts = prim::<TimestampNanosecondType>(get(c::TS), i).unwrap_or_default();
    let qname = string(c::QNAME);
    let qtype = prim::<UInt16Type>(get(c::QTYPE), i);
    let qclass = prim::<UInt16Type>(get(c::QCLASS), i);
    // Schema version 2: a NULL of a derived column is its rule's value ([`crate::derived`]).
    let query_ts = prim::<TimestampNanosecondType>(get(c::QUERY_TS), i)
        .or_else(|| derived::query_ts(ts, status));
    let response_ts = prim::<TimestampNanosecondType>(get(c::RESPONSE_TS), i);
    let latency_ns = prim::<Int64Type>(get(c::LATENCY_NS), i)
        .or_else(|| derived::latency_ns(query_ts, response_ts));
    let answer_ips = answer_ips.or_else(|| derived::answer_ips(status, answers.as_deref()));
    let questions =
        questions.or_else(|| derived::questions(status, qname.as_deref(), qtype, qclass));
    let stack = strings(c::STACK).map(Arc::from);
    let dns_id = prim::<UInt16Type>(get(c::DNS_ID), i);
    // Requester behind a local stub (`stub-link`): three parallel lists.
    let requesters = get(c::REQUESTER_PIDS)
        .and_then(|c| c.as_list_opt::<i32>())
        .map(|l| {
            let pids = l.value(i);
            let pids = pids.as_primitive::<UInt32Type>();
            let comms = strings(c::REQUESTER_COMMS).unwrap_or_default();
            let exes = get(c::REQUESTER_EXES)
                .and_then(|c| c.as_list_opt::<i32>())
                .map(|l| l.value(i));
            let exes = exes.as_ref().map(|a| a.as_string::<i32>());
            (0..pids.len())
                .map(|j| Requester {
                    pid: pids.value(j),
                    comm: comms.get(j).cloned().unwrap_or_default(),
                    exe: exes
                        .filter(|e| j < e.len() && e.is_valid(j))
                        .map(|e| Arc::from(e.value(j))),
                })
                .collect()
        });
    Transaction {
        ts,
        query_ts,
        response_ts,
        latency_ns,
        status,
        hostname: arc(c::HOSTNAME).unwrap_or_else(|| Arc::from("")),
        boot_id: arc(c::BOOT_ID),
        pid: prim::<UInt32Type>(get(c::PID), i),
        tid: prim::<UInt32Type>(get(c::TID), i),
        ppid: prim::<UInt32Type>(get(c::PPID), i),
        uid: prim::<UInt32Type>(get(c::UID), i),
        gid: prim::<UInt32Type>(get(c::GID), i),
        comm: string(c::COMM),
        exe: arc(c::EXE),
        cmdline: arc(c::CMDLINE),
        cgroup_id: prim::<UInt64Type>(get(c::CGROUP_ID), i),
        cgroup_path: arc(c::CGROUP_PATH),
        container_id: arc(c::CONTAINER_ID),
        netns: prim::<UInt32Type>(get(c::NETNS), i),
        transport: statik(
            string(c::TRANSPORT),
            &[
                crate::transport::UDP,
                crate::transport::TCP,
                crate::transport::DOT,
                crate::transport::DOQ,
                crate::transport::DOH_LIKELY,
                crate::transport::LIBC,
            ],
        ),
        ip_version: prim::<UInt8Type>(get(c::IP_VERSION), i).unwrap_or_default(),
        client_ip: string(c::CLIENT_IP).unwrap_or_default(),
        client_port: prim::<UInt16Type>(get(c::CLIENT_PORT), i).unwrap_or_default(),
        server_ip: string(c::SERVER_IP).unwrap_or_default(),
        server_port: prim::<UInt16Type>(get(c::SERVER_PORT), i).unwrap_or_default(),
        dns_id,
        opcode: prim::<UInt8Type>(get(c::OPCODE), i),
        rcode: prim::<UInt16Type>(get(c::RCODE), i),
        rcode_name: string(c::RCODE_NAME),
        aa: boolean(c::AA),
        tc: boolean(c::TC),
        rd: boolean(c::RD),
        ra: boolean(c::RA),
        ad: boolean(c::AD),
        cd: boolean(c::CD),
        qname,
        qtype,
        qtype_name: string(c::QTYPE_NAME),
        qclass,
        questions,
        qdcount: prim::<UInt16Type>(get(c::QDCOUNT), i),
        ancount: prim::<UInt16Type>(get(c::ANCOUNT), i),
        nscount: prim::<UInt16Type>(get(c::NSCOUNT), i),
        arcount: prim::<UInt16Type>(get(c::ARCOUNT), i),
        registered_domain: string(c::REGISTERED_DOMAIN),
        answers,
        answer_ips,
        edns_udp_size: prim::<UInt16Type>(get(c::EDNS_UDP_SIZE), i),
        edns_version: prim::<UInt8Type>(get(c::EDNS_VERSION), i),
        edns_do: boolean(c::EDNS_DO),
        edns_ecs: string(c::EDNS_ECS),
        edns_cookie: boolean(c::EDNS_COOKIE),
        ede_code: prim::<UInt16Type>(get(c::EDE_CODE), i),
        ede_text: string(c::EDE_TEXT),
        query_size: prim::<UInt32Type>(get(c::QUERY_SIZE), i),
        response_size: prim::<UInt32Type>(get(c::RESPONSE_SIZE), i),
        // Schema version 3: the bytes of the `_x` column, the ID restored.
        query_raw: derived::raw_restored(
            binary(c::QUERY_RAW).as_deref(),
            binary(c::QUERY_RAW_X).as_deref(),
            dns_id,
        ),
        response_raw: derived::raw_restored(
            binary(c::RESPONSE_RAW).as_deref(),
            binary(c::RESPONSE_RAW_X).as_deref(),
            dns_id,
        ),
        parse_error: string(c::PARSE_ERROR),
        stack,
        qname_case: string(c::QNAME_CASE),
        questions_case: strings(c::QUESTIONS_CASE),
        side: string(c::SIDE).and_then(|v| {
            [crate::side::CLIENT, crate::side::SERVER]
                .into_iter()
                .find(|k| *k == v)
        }),
        requesters,
        stub_cache: Some(statik(
            string(c::STUB_CACHE),
            &[crate::stub_cache::MISS, crate::stub_cache::HIT],
        ))
        .filter(|v| !v.is_empty()),
        lookup_fn: string(c::LOOKUP_FN).map(|f| {
            statik(
                Some(f),
                &[
                    crate::lookup_fn::GETADDRINFO,
                    crate::lookup_fn::GETHOSTBYNAME,
                    crate::lookup_fn::GETHOSTBYNAME2,
                    crate::lookup_fn::GETNAMEINFO,
                ],
            )
        }),
        lookup_family: prim::<UInt8Type>(get(c::LOOKUP_FAMILY), i),
        lookup_error: string(c::LOOKUP_ERROR),
        lookup_local: boolean(c::LOOKUP_LOCAL),
        lookup_id: prim::<UInt64Type>(get(c::LOOKUP_ID), i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    fn row(i: i64) -> Transaction {
        Transaction {
            ts: i,
            query_ts: Some(i),
            status: crate::status::ANSWERED,
            hostname: "h".into(),
            transport: "udp",
            ip_version: 4,
            client_ip: "127.0.0.1".into(),
            server_ip: "127.0.0.1".into(),
            server_port: 53,
            qname: Some("example.com".into()),
            qtype: Some(1),
            qclass: Some(1),
            questions: Some(vec![Question {
                name: "example.com".into(),
                qtype: 1,
                qclass: 1,
            }]),
            answers: Some(vec![Answer {
                name: "example.com".into(),
                rtype: "A".into(),
                ttl: 60,
                data: "192.0.2.1".into(),
            }]),
            answer_ips: Some(vec!["192.0.2.1".into()]),
            ..Default::default()
        }
    }

    #[test]
    fn rows_read_back_equal_rows_written() {
        let mut full = row(7);
        full.pid = Some(42);
        full.comm = Some("dig".into());
        full.exe = Some("/usr/bin/dig".into());
        full.query_raw = Some(vec![1, 2, 3]);
        full.latency_ns = Some(5);
        full.aa = Some(true);
        full.edns_ecs = Some("192.0.2.0/24/0".into());
        full.qname_case = Some("Example.com".into());
        full.questions_case = Some(vec!["Example.com".into(), r"B\.\000x.Test".into()]);
        full.side = Some(crate::side::SERVER);
        full.requesters = Some(vec![
            Requester {
                pid: 7,
                comm: "dig".into(),
                exe: Some("/usr/bin/dig".into()),
            },
            Requester {
                pid: 8,
                comm: "gone".into(),
                exe: None,
            },
        ]);
        full.stub_cache = Some(crate::stub_cache::HIT);
        full.stack = Some(Arc::from(vec![
            "send_query (client.c:12)".to_string(),
            "/usr/bin/client+0x1234".to_string(),
        ]));
        let lookup = Transaction {
            status: crate::status::LOOKUP,
            transport: crate::transport::LIBC,
            lookup_fn: Some(crate::lookup_fn::GETADDRINFO),
            lookup_family: Some(6),
            lookup_error: Some("EAI_NONAME".into()),
            lookup_local: Some(true),
            lookup_id: Some(u64::MAX - 1),
            ..row(9)
        };
        let sparse = Transaction {
            answers: None,
            answer_ips: None,
            qname: None,
            qtype: None,
            qclass: None,
            questions: None,
            status: crate::status::UNANSWERED,
            transport: "tcp",
            ..row(8)
        };
        let mut b = TransactionBatchBuilder::new();
        b.append(&full);
        b.append(&sparse);
        b.append(&lookup);
        let batch = b.finish().expect("batch");
        assert_eq!(transaction_at(&batch, 0), full);
        assert_eq!(transaction_at(&batch, 1), sparse);
        assert_eq!(transaction_at(&batch, 2), lookup);
    }

    #[test]
    fn raw_messages_are_stored_with_the_id_xored_out() {
        use crate::col as c;
        use arrow_array::cast::AsArray;
        let query = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01];
        let mut response = query.clone();
        response[2] = 0x81;
        let paired = Transaction {
            dns_id: Some(0x1234),
            query_raw: Some(query.clone()),
            response_raw: Some(response.clone()),
            ..row(1)
        };
        // The same messages under another ID: the same stored bytes.
        let mut query2 = query.clone();
        query2[..2].copy_from_slice(&[0xbe, 0xef]);
        let mut response2 = response.clone();
        response2[..2].copy_from_slice(&[0xbe, 0xef]);
        let again = Transaction {
            dns_id: Some(0xbeef),
            query_raw: Some(query2),
            response_raw: Some(response2),
            ..row(2)
        };
        // A response whose ID is not dns_id, a one-byte message, a row without dns_id.
        let mut other = response.clone();
        other[..2].copy_from_slice(&[0xff, 0x00]);
        let mismatched = Transaction {
            dns_id: Some(0x1234),
            query_raw: Some(vec![7]),
            response_raw: Some(other),
            ..row(3)
        };
        let no_id = Transaction {
            dns_id: None,
            query_raw: Some(vec![1, 2, 3]),
            ..row(4)
        };
        let rows = [&paired, &again, &mismatched, &no_id];
        let mut b = TransactionBatchBuilder::new();
        for t in rows {
            b.append(t);
        }
        let batch = b.finish().expect("batch");
        let bytes = |name: &str| -> Vec<Option<Vec<u8>>> {
            let a = batch
                .column_by_name(name)
                .expect("column")
                .as_binary::<i32>();
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i).to_vec()))
                .collect()
        };
        let zeroed = |m: &[u8]| [&[0, 0][..], &m[2..]].concat();
        assert_eq!(
            bytes(c::QUERY_RAW),
            [None, None, Some(vec![7]), Some(vec![1, 2, 3])]
        );
        assert_eq!(
            bytes(c::QUERY_RAW_X),
            [Some(zeroed(&query)), Some(zeroed(&query)), None, None]
        );
        assert_eq!(bytes(c::RESPONSE_RAW), [None, None, None, None]);
        assert_eq!(
            bytes(c::RESPONSE_RAW_X),
            [
                Some(zeroed(&response)),
                Some(zeroed(&response)),
                Some([&[0xff ^ 0x12, 0x34][..], &response[2..]].concat()),
                None
            ]
        );
        for (i, t) in rows.into_iter().enumerate() {
            assert_eq!(&transaction_at(&batch, i), t, "row {i}");
        }
    }

    #[test]
    fn derivable_values_are_not_stored() {
        use crate::col as c;
        let plain = Transaction {
            response_ts: Some(20),
            latency_ns: Some(10),
            ..row(10)
        };
        // Every derived column differs from its rule.
        let mut odd = Transaction {
            query_ts: Some(9),
            response_ts: Some(20),
            latency_ns: Some(3),
            questions: Some(vec![
                Question {
                    name: "example.com".into(),
                    qtype: 1,
                    qclass: 1,
                },
                Question {
                    name: "b.example".into(),
                    qtype: 28,
                    qclass: 1,
                },
            ]),
            ..row(11)
        };
        odd.answers.as_mut().expect("answers").push(Answer {
            name: "example.com".into(),
            rtype: "A".into(),
            ttl: 1,
            data: r"\# 3 010203".into(),
        });
        let unsolicited = Transaction {
            status: crate::status::UNSOLICITED,
            query_ts: None,
            response_ts: Some(12),
            ..row(12)
        };
        let lookup = Transaction {
            status: crate::status::LOOKUP,
            transport: crate::transport::LIBC,
            answers: None,
            questions: None,
            answer_ips: Some(vec!["192.0.2.9".into()]),
            ..row(13)
        };
        let mut b = TransactionBatchBuilder::new();
        for t in [&plain, &odd, &unsolicited, &lookup] {
            b.append(t);
        }
        let batch = b.finish().expect("batch");
        let nulls = |name: &str| -> Vec<bool> {
            let a = batch.column_by_name(name).expect("column");
            (0..batch.num_rows()).map(|i| a.is_null(i)).collect()
        };
        assert_eq!(nulls(c::QUERY_TS), [true, false, true, true]);
        assert_eq!(nulls(c::LATENCY_NS), [true, false, true, true]);
        assert_eq!(nulls(c::QUESTIONS), [true, false, true, true]);
        assert_eq!(nulls(c::ANSWER_IPS), [true, false, true, false]);
        // Read back, every value is there again.
        for (i, t) in [&plain, &odd, &unsolicited, &lookup]
            .into_iter()
            .enumerate()
        {
            assert_eq!(&transaction_at(&batch, i), t, "row {i}");
        }
    }

    #[test]
    fn builds_batches_matching_schema() {
        let mut b = TransactionBatchBuilder::new();
        b.append(&row(1));
        b.append(&Transaction {
            answers: None,
            answer_ips: None,
            questions: None,
            ..row(2)
        });
        assert_eq!(b.len(), 2);
        let batch = b.finish().expect("batch");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), schema());
        let answers = batch.column_by_name(crate::col::ANSWERS).expect("answers");
        assert!(answers.is_valid(0));
        assert!(answers.is_null(1));
        assert!(b.is_empty());
        // The builder is reusable after finish.
        b.append(&row(3));
        assert_eq!(b.finish().expect("batch").num_rows(), 1);
    }
}
