//! Step 2 of a query, the functions: SQL functions for DNS names, registered in every session
//! ([`register_all`]), usable in any `dnsql` query and used by the recipes.
//!
//! | function | returns | meaning |
//! |---|---|---|
//! | `registered_domain(name)` | text | the registrable domain ("eTLD+1", Public Suffix List), lower-cased: `a.b.example.co.uk` → `example.co.uk`; NULL for public suffixes, single labels, the root, and names whose registered domain would hold a label other than letters, digits, `-`, `_`; the same as the `registered_domain` column |
//! | `subdomain(name)` | text | the labels left of the registered domain: `a.b.example.co.uk` → `a.b`; `''` for the registered domain itself; NULL when there is no registered domain |
//! | `label_count(name)` | bigint | number of labels (`.` → 0) |
//! | `name_length(name)` | bigint | length of the name in octets as on the wire without the length bytes: label octets plus the dots between them (`\DDD` and `\.` count as one) |
//! | `max_label_len(name)` | bigint | longest label, in octets (`\DDD` and `\.` count as one) |
//! | `label_entropy(name)` | double | Shannon entropy, bits per character, of the characters of the labels left of the registered domain (dots excluded; all labels when there is no registered domain); 0 when there are none |
//! | `label_alphabet(name)` | text | which encoding alphabet those characters look like: `hex`, `base32`, `base64`, `8bit` or `dns` (ordinary host name); see [`names::label_alphabet_of`] |
//! | `info_content(list)` | bigint | zlib-compressed length in bytes of the sorted, de-duplicated strings of a list, concatenated: Elastic ML's `info_content` measure; use as `info_content(array_agg(qname))` |
//! | `answer_strings(answers)` | list<text> | each answer as `TYPE data` |
//! | `answer_data(answers)` | list<text> | each answer's data only |
//! | `question_name(query_raw)` | text | the first question's name decoded from a raw DNS message, with its case preserved (the `qname` column is lower-cased) |
//!
//! Names are read by the DNS text rules of `dnsledger_schema::dnstext`, the ones the recorder
//! writes them by: labels separated by `.`, a `.` inside a label written `\.`, other unprintable
//! bytes as `\DDD`. A trailing dot is ignored and letters compare case-insensitively.
//!
//! `registered_domain(name)` is `dnsledger_schema::dnstext::registered_domain`, the definition
//! the recorder writes into the `registered_domain` column, so the function and the column agree
//! on every name: only the registered domain itself (and its public suffix) must be host-name
//! labels, so dns2tcp's `aaaa.=auth.srv.tunnel.com` is under `tunnel.com`.
//!
//! [`names`] holds the pure functions, [`sql`] the DataFusion glue.

pub mod names;
pub mod sql;

pub use names::ALPHABET_MIN_CHARS;
pub use sql::{functions_help, register_all, udfs};
