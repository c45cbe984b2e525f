-- dnsql exfil: (registered domain, process) pairs ranked by signs of DNS tunnelling or
-- exfiltration, with the evidence per row. recipes/exfil.rs fills in the words in braces:
--   key: the key columns of a pair (domain, hostname, comm, exe, container_id);
--   on_n, on_h, on_q, on_a: the join conditions on those columns;
--   long_name, long_label, long_txt, oversized_response: thresholds of evidence columns;
--   score, reasons, flagged: the signals.
-- The thresholds and signals come from one table, THRESHOLDS in exfil.rs.
-- Each name's features are computed once per distinct qname, on the name as sent
-- (question_name(query_raw): qname is lower-cased, and mixed case is a base64 sign).
WITH k AS (
  SELECT registered_domain AS domain,
         coalesce(CAST(hostname AS VARCHAR), '') AS hostname,
         coalesce(CAST(comm AS VARCHAR), '') AS comm,
         coalesce(CAST(exe AS VARCHAR), '') AS exe,
         coalesce(CAST(container_id AS VARCHAR), '') AS container_id,
         pid, ts, qname,
         coalesce(question_name(query_raw), qname) AS sent_name,
         CAST(qtype_name AS VARCHAR) AS qtype,
         CAST(coalesce(query_size, 0) AS BIGINT) AS qbytes,
         CAST(coalesce(response_size, 0) AS BIGINT) AS rbytes,
         answers
  FROM dns
  WHERE qname IS NOT NULL AND status <> 'unsolicited'
    AND registered_domain IS NOT NULL
),
distinct_names AS (
  SELECT {key}, qname, max(sent_name) AS sent_name
  FROM k
  GROUP BY {key}, qname
),
names AS (
  SELECT {key}, sent_name,
         label_entropy(sent_name) AS entropy,
         label_alphabet(sent_name) AS alphabet,
         name_length(sent_name) AS name_len,
         max_label_len(sent_name) AS label_len
  FROM distinct_names
),
name_stats AS (
  SELECT {key},
         count(*) AS unique_names,
         avg(entropy) AS avg_entropy,
         sum(entropy * name_len) / nullif(sum(name_len), 0) AS weighted_entropy,
         max(entropy) AS max_entropy,
         count(*) FILTER (WHERE alphabet <> 'dns') AS encoded_names,
         coalesce(sum(name_len) FILTER (WHERE alphabet <> 'dns'), 0) AS encoded_chars,
         array_sort(array_agg(DISTINCT alphabet) FILTER (WHERE alphabet <> 'dns')) AS alphabets,
         avg(name_len) AS avg_name_len,
         max(name_len) AS max_name_len,
         max(label_len) AS max_label_len,
         count(*) FILTER (WHERE name_len > {long_name}) AS long_names,
         count(*) FILTER (WHERE label_len >= {long_label}) AS long_label_names,
         sum(name_len) AS name_chars
  FROM names
  GROUP BY {key}
),
-- Distinct names per hour as DISTINCT rows, then counted: a count(DISTINCT) per group keeps
-- a hash set per (key, hour) group in DataFusion (~36 KiB each; 18 GB at 5M rows).
hourly AS (
  SELECT {key}, max(n) AS peak_names_per_hour
  FROM (SELECT {key}, hour, count(*) AS n
        FROM (SELECT DISTINCT {key}, date_bin(INTERVAL '1 hour', ts) AS hour, qname FROM k) AS d
        GROUP BY {key}, hour) AS h
  GROUP BY {key}
),
quarterly AS (
  SELECT {key}, max(ic) AS peak_info_content_15m
  FROM (SELECT {key}, info_content(array_agg(qname)) AS ic
        FROM k GROUP BY {key}, date_bin(INTERVAL '15 minutes', ts)) AS q
  GROUP BY {key}
),
answer_stats AS (
  SELECT {key},
         sum(character_length(a) - strpos(a, ' ')) AS answer_chars,
         count(*) FILTER (WHERE starts_with(a, 'TXT ')
                          AND character_length(a) - 4 > {long_txt}) AS long_txt_answers
  FROM (SELECT DISTINCT {key}, unnest(ans) AS a
        FROM (SELECT {key}, answer_strings(answers) AS ans FROM k) AS u) AS d
  GROUP BY {key}
),
totals AS (
  SELECT {key},
         count(*) AS queries,
         array_sort(array_agg(DISTINCT pid) FILTER (WHERE pid IS NOT NULL)) AS pids,
         count(*) FILTER (WHERE qtype = 'TXT') AS txt_queries,
         count(*) FILTER (WHERE qtype = 'NULL') AS null_queries,
         count(*) FILTER (WHERE qtype = 'CNAME') AS cname_queries,
         count(*) FILTER (WHERE rbytes > {oversized_response}) AS oversized_responses,
         sum(qbytes) AS bytes_out,
         sum(rbytes) AS bytes_in,
         min(ts) AS first_seen,
         max(ts) AS last_seen
  FROM k
  GROUP BY {key}
),
ev AS (
  SELECT t.*,
         n.unique_names, n.avg_entropy, n.weighted_entropy, n.max_entropy,
         n.encoded_names, n.encoded_chars, n.name_chars, n.alphabets,
         n.avg_name_len, n.max_name_len, n.max_label_len, n.long_names, n.long_label_names,
         h.peak_names_per_hour, q.peak_info_content_15m,
         n.name_chars + coalesce(a.answer_chars, 0) AS name_answer_chars,
         coalesce(a.long_txt_answers, 0) AS long_txt_answers
  FROM totals t
  JOIN name_stats n ON {on_n}
  JOIN hourly h ON {on_h}
  JOIN quarterly q ON {on_q}
  LEFT JOIN answer_stats a ON {on_a}
),
scored AS (
  SELECT ev.*,
         {score} AS score,
         concat_ws(', ', {reasons}) AS reasons,
         {flagged} AS flagged
  FROM ev
)
SELECT domain,
       nullif(hostname, '') AS hostname,
       nullif(comm, '') AS comm,
       nullif(exe, '') AS exe,
       nullif(container_id, '') AS container_id,
       pids,
       flagged,
       score,
       reasons,
       queries,
       unique_names,
       peak_names_per_hour,
       peak_info_content_15m,
       round(avg_entropy, 2) AS avg_entropy,
       round(weighted_entropy, 2) AS weighted_entropy,
       round(max_entropy, 2) AS max_entropy,
       encoded_names,
       round(100.0 * encoded_chars / nullif(name_chars, 0), 1) AS encoded_chars_pct,
       alphabets,
       round(avg_name_len, 1) AS avg_name_len,
       max_name_len,
       max_label_len,
       long_names,
       long_label_names,
       txt_queries,
       null_queries,
       cname_queries,
       round(100.0 * (txt_queries + null_queries + cname_queries) / queries, 1) AS txt_null_cname_pct,
       long_txt_answers,
       oversized_responses,
       name_answer_chars,
       bytes_out,
       bytes_in,
       first_seen,
       last_seen
FROM scored
WHERE score > 0
ORDER BY flagged DESC, score DESC, unique_names DESC, bytes_out + bytes_in DESC, domain, hostname
