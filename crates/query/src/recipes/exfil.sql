-- dnsql exfil: (registered domain, process) pairs ranked by signs of DNS tunnelling or
-- exfiltration, with the evidence per row. recipes/exfil.rs fills in the words in braces:
--   key: the key columns of a pair (domain, hostname, comm, exe, container_id);
--   on_p: the join condition on those columns;
--   long_name, long_label, long_txt, oversized_response: thresholds of evidence columns;
--   score, reasons, flagged: the signals, over the columns of one hour (`hourly`).
-- The thresholds and signals come from one table, THRESHOLDS in exfil.rs.
--
-- Every signal is a rate or a share within one (process, registered domain, hour), never a
-- total over the queried window: a busy ordinary domain seen for a month on a hundred hosts
-- has the same hours as one seen for a day on one host. A pair is flagged when one of its
-- hours is (volume AND (encoding OR records)) in that same hour.
--
-- Memory: two-level aggregation, no per-group DISTINCT or array_agg over the rows. Level 1
-- (`per_name`) has one row per (pair, hour, distinct name) with plain counters; level 2
-- (`hourly`) one per (pair, hour); level 3 (`pairs`) one per pair. All three are hash
-- aggregations with fixed-size state per group, which spill under the session's memory pool.
-- Each name's features are computed once per (pair, hour, name), on the name as sent
-- (qname_case, stored also with --no-raw; for segments older than that column, the name read
-- from query_raw): qname is lower-cased, and mixed case is a base64 sign.
WITH k AS (
  SELECT registered_domain AS domain,
         coalesce(CAST(hostname AS VARCHAR), '') AS hostname,
         coalesce(CAST(comm AS VARCHAR), '') AS comm,
         coalesce(CAST(exe AS VARCHAR), '') AS exe,
         coalesce(CAST(container_id AS VARCHAR), '') AS container_id,
         date_bin(INTERVAL '1 hour', ts) AS hour,
         ts, qname, qname_case, query_raw,
         CAST(qtype_name AS VARCHAR) AS qtype,
         CAST(coalesce(query_size, 0) AS BIGINT) AS qbytes,
         CAST(coalesce(response_size, 0) AS BIGINT) AS rbytes,
         answers
  FROM dns
  WHERE qname IS NOT NULL AND status NOT IN ('unsolicited', 'lookup')
    AND registered_domain IS NOT NULL AND {not_relayed}
),
per_name AS (
  SELECT {key}, hour, qname,
         coalesce(max(qname_case), max(question_name(query_raw)), qname) AS sent_name,
         count(*) AS queries,
         count(*) FILTER (WHERE qtype = 'TXT') AS txt_queries,
         count(*) FILTER (WHERE qtype = 'NULL') AS null_queries,
         count(*) FILTER (WHERE qtype = 'CNAME') AS cname_queries,
         count(*) FILTER (WHERE rbytes > {oversized_response}) AS oversized_responses,
         coalesce(max(character_length(array_to_string(answer_data(answers), '')))
                  FILTER (WHERE qtype = 'TXT'), 0) AS txt_answer_chars,
         sum(qbytes) AS bytes_out,
         sum(rbytes) AS bytes_in,
         min(ts) AS first_seen,
         max(ts) AS last_seen
  FROM k
  GROUP BY {key}, hour, qname
),
names AS (
  SELECT *,
         label_entropy(sent_name) AS entropy,
         label_alphabet(sent_name) AS alphabet,
         name_length(sent_name) AS name_len,
         max_label_len(sent_name) AS label_len
  FROM per_name
),
hourly AS (
  SELECT {key}, hour,
         count(*) AS names,
         sum(queries) AS queries,
         sum(entropy * name_len) / nullif(sum(name_len), 0) AS weighted_entropy,
         max(entropy) AS max_entropy,
         count(*) FILTER (WHERE alphabet <> 'dns') AS encoded_names,
         coalesce(sum(name_len) FILTER (WHERE alphabet <> 'dns'), 0) AS encoded_chars,
         count(*) FILTER (WHERE alphabet = 'hex') AS hex_names,
         count(*) FILTER (WHERE alphabet = 'base32') AS base32_names,
         count(*) FILTER (WHERE alphabet = 'base64') AS base64_names,
         count(*) FILTER (WHERE alphabet = '8bit') AS eightbit_names,
         sum(name_len) AS name_chars,
         max(name_len) AS max_name_len,
         max(label_len) AS max_label_len,
         count(*) FILTER (WHERE name_len > {long_name}) AS long_names,
         count(*) FILTER (WHERE label_len >= {long_label}) AS long_label_names,
         sum(txt_queries) AS txt_queries,
         sum(null_queries) AS null_queries,
         sum(cname_queries) AS cname_queries,
         count(*) FILTER (WHERE txt_answer_chars > {long_txt}) AS long_txt_answers,
         sum(oversized_responses) AS oversized_responses,
         sum(bytes_out) AS bytes_out,
         sum(bytes_in) AS bytes_in,
         min(first_seen) AS first_seen,
         max(last_seen) AS last_seen
  FROM names
  GROUP BY {key}, hour
),
scored AS (
  SELECT hourly.*,
         {score} AS score,
         concat_ws(', ', {reasons}) AS reasons,
         {flagged} AS flagged
  FROM hourly
),
pairs AS (
  SELECT {key},
         bool_or(flagged) AS flagged,
         max(score) AS score,
         first_value(reasons ORDER BY flagged DESC, score DESC, names DESC, hour) AS reasons,
         first_value(hour ORDER BY flagged DESC, score DESC, names DESC, hour) AS worst_hour,
         count(*) FILTER (WHERE flagged) AS flagged_hours,
         count(*) AS active_hours,
         sum(queries) AS queries,
         max(names) AS peak_names_per_hour,
         max(encoded_names) AS peak_encoded_names_per_hour,
         max(CAST(encoded_chars AS DOUBLE) / nullif(name_chars, 0)) AS peak_encoded_share,
         max(weighted_entropy) AS peak_weighted_entropy,
         max(max_entropy) AS max_entropy,
         max(name_chars) AS peak_name_chars_per_hour,
         sum(hex_names) AS hex_names,
         sum(base32_names) AS base32_names,
         sum(base64_names) AS base64_names,
         sum(eightbit_names) AS eightbit_names,
         max(max_name_len) AS max_name_len,
         max(max_label_len) AS max_label_len,
         sum(long_names) AS long_names,
         sum(long_label_names) AS long_label_names,
         sum(txt_queries) AS txt_queries,
         sum(null_queries) AS null_queries,
         sum(cname_queries) AS cname_queries,
         max(txt_queries) AS peak_txt_per_hour,
         sum(long_txt_answers) AS long_txt_answers,
         sum(oversized_responses) AS oversized_responses,
         sum(bytes_out) AS bytes_out,
         sum(bytes_in) AS bytes_in,
         min(first_seen) AS first_seen,
         max(last_seen) AS last_seen
  FROM scored
  GROUP BY {key}
  HAVING max(score) > 0
),
-- The pids of every pair: distinct (pair, pid) rows first (a dig loop has thousands), then
-- the count and the lowest ten per pair; joined to the pairs shown.
pids AS (
  SELECT {key}, count(*) AS pid_count,
         array_slice(array_agg(pid ORDER BY pid), 1, 10) AS pids
  FROM (SELECT DISTINCT registered_domain AS domain,
               coalesce(CAST(hostname AS VARCHAR), '') AS hostname,
               coalesce(CAST(comm AS VARCHAR), '') AS comm,
               coalesce(CAST(exe AS VARCHAR), '') AS exe,
               coalesce(CAST(container_id AS VARCHAR), '') AS container_id,
               pid
        FROM dns
        WHERE qname IS NOT NULL AND status NOT IN ('unsolicited', 'lookup')
          AND registered_domain IS NOT NULL AND pid IS NOT NULL AND {not_relayed}) AS d
  GROUP BY {key}
),
joined AS (
  SELECT p.*, coalesce(i.pids, []) AS pids, coalesce(i.pid_count, 0) AS pid_count
  FROM pairs p
  LEFT JOIN pids i ON {on_p}
)
SELECT domain,
       nullif(hostname, '') AS hostname,
       nullif(comm, '') AS comm,
       nullif(exe, '') AS exe,
       nullif(container_id, '') AS container_id,
       pids,
       pid_count,
       flagged,
       score,
       reasons,
       worst_hour,
       flagged_hours,
       active_hours,
       queries,
       peak_names_per_hour,
       peak_encoded_names_per_hour,
       round(100.0 * peak_encoded_share, 1) AS peak_encoded_pct,
       round(peak_weighted_entropy, 2) AS peak_weighted_entropy,
       round(max_entropy, 2) AS max_entropy,
       peak_name_chars_per_hour,
       concat('[', concat_ws(', ', CASE WHEN hex_names > 0 THEN 'hex' END,
                                   CASE WHEN base32_names > 0 THEN 'base32' END,
                                   CASE WHEN base64_names > 0 THEN 'base64' END,
                                   CASE WHEN eightbit_names > 0 THEN '8bit' END), ']') AS alphabets,
       max_name_len,
       max_label_len,
       long_names,
       long_label_names,
       txt_queries,
       null_queries,
       cname_queries,
       peak_txt_per_hour,
       long_txt_answers,
       oversized_responses,
       bytes_out,
       bytes_in,
       first_seen,
       last_seen
FROM joined
ORDER BY flagged DESC, score DESC, flagged_hours DESC, peak_names_per_hour DESC,
         bytes_out + bytes_in DESC, domain, hostname
