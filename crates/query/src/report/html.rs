//! The report as one HTML document: inline CSS and SVG only, and a Content-Security-Policy
//! that forbids the page to load anything (no script, font, image or style from anywhere), so
//! it renders the same with the network cut and a hostile name in the data can run nothing.
//! Every text from the data goes through [`escape`].

use std::fmt::Write as _;

use super::{Note, Report, Section, Table, count_text, duration_text, sql};

/// Text for HTML element content and quoted attribute values: the five markup characters as
/// entities, control characters and the bidirectional overrides/isolates (which could make a
/// name read as another) shown as `\u{…}`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control()
                || ('\u{202A}'..='\u{202E}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
                || c == '\u{200E}'
                || c == '\u{200F}' =>
            {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #1b1b1b; background: #fff; margin: 0 auto; max-width: 1240px; padding: 18px 24px 40px;
  -webkit-print-color-adjust: exact; print-color-adjust: exact; }
h1 { font-size: 26px; margin: 0 0 6px; }
h2 { font-size: 20px; margin: 34px 0 8px; padding-bottom: 4px; border-bottom: 2px solid #1b1b1b; }
h3 { font-size: 15px; margin: 18px 0 6px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0 12px; }
dl.facts dt { color: #555; }
dl.facts dd { margin: 0; font-variant-numeric: tabular-nums; }
nav { margin: 10px 0; font-size: 14px; }
nav a { margin-right: 14px; color: #0b5394; }
p.note { margin: 6px 0; max-width: 78em; }
p.warn { margin: 8px 0; padding: 8px 12px; border-left: 5px solid #cc0000; background: #fdecea; max-width: 78em; }
p.warn.big { font-size: 17px; font-weight: 600; }
figure { margin: 10px 0 14px; }
.chart svg { width: 100%; height: auto; display: block; }
figcaption { font-size: 13px; color: #333; }
ul.legend { list-style: none; padding: 0; margin: 4px 0; display: flex; flex-wrap: wrap; gap: 4px 16px; }
ul.legend .sw { display: inline-block; width: 12px; height: 12px; margin-right: 5px; vertical-align: -1px; border: 1px solid #0003; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 10px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border: 1px solid #d0d0d0; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; font-weight: 600; white-space: nowrap; }
td { white-space: nowrap; }
td.long { white-space: normal; min-width: 16em; max-width: 34em; overflow-wrap: anywhere; }
td.null::after { content: "NULL"; color: #aaa; font-size: 11px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.null { color: #999; }
td.empty { color: #666; font-style: italic; }
tbody tr:nth-child(even) { background: #fafafa; }
pre { font: 12.5px/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; background: #f6f6f6;
  border: 1px solid #e0e0e0; padding: 8px 10px; white-space: pre-wrap; overflow-wrap: anywhere; margin: 4px 0 10px; }
code { font: 13px ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; overflow-wrap: anywhere; }
details.sql { margin: 6px 0; font-size: 13px; }
details.sql summary { cursor: pointer; color: #0b5394; }
pre.sql { max-height: 19em; overflow: auto; }
footer { margin-top: 40px; font-size: 12px; color: #666; border-top: 1px solid #ccc; padding-top: 8px; }
@page { size: A4 landscape; margin: 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  nav { display: none; }
  h2 { break-after: avoid; }
  figure, table, pre { break-inside: avoid; }
  .scroll { overflow: visible; }
  table { font-size: 9.5px; }
  td.long { max-width: 22em; }
  pre.sql { max-height: none; overflow: visible; }
  details.sql summary { color: #000; }
}
"#;

fn dd(out: &mut String, term: &str, value: &str) {
    let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", escape(term), escape(value));
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let req = &r.request;
    let mut out = String::with_capacity(64 * 1024);
    let hosts: Vec<&str> = r.hosts.iter().map(|h| h.host.as_str()).collect();
    let title = format!(
        "DNS report: {} to {}{}",
        sql::rfc3339(req.window.start),
        sql::rfc3339(req.window.end),
        match hosts.as_slice() {
            [] => String::new(),
            [one] => format!(", {one}"),
            many => format!(", {} hosts", many.len()),
        }
    );
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">\n",
    );
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        out,
        "<meta name=\"generator\" content=\"dnsql {}\">",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(out, "<title>{}</title>", escape(&title));
    let _ = writeln!(out, "<style>{CSS}</style>\n</head>\n<body>\n<header>");
    out.push_str("<h1>DNS report</h1>\n<dl class=\"facts\">\n");
    dd(
        &mut out,
        "window",
        &format!(
            "{} to {} ({}{})",
            sql::rfc3339(req.window.start),
            sql::rfc3339(req.window.end),
            duration_text(req.window.len()),
            match (req.since_given, req.until_given) {
                (true, true) => "",
                (true, false) => "; until the time of the report",
                (false, true) => "; from the first segment",
                (false, false) => "; the span of the segments found",
            }
        ),
    );
    dd(
        &mut out,
        "hosts",
        &if hosts.is_empty() {
            "none with segments in the window".to_owned()
        } else {
            hosts.join(", ")
        },
    );
    dd(
        &mut out,
        "transactions",
        &format!(
            "{} ({} NXDOMAIN, {} unanswered)",
            count_text(r.queries),
            count_text(r.nxdomain),
            count_text(r.unanswered)
        ),
    );
    dd(&mut out, "segments", &count_text(r.segments as u64));
    dd(&mut out, "data", &req.sources.join(", "));
    dd(
        &mut out,
        "generated",
        &format!(
            "{} by dnsql {}",
            sql::rfc3339(req.generated_at - req.generated_at % 1_000_000_000),
            env!("CARGO_PKG_VERSION")
        ),
    );
    out.push_str("</dl>\n");
    if let Some(why) = &r.empty {
        let _ = writeln!(
            out,
            "<p class=\"warn big\" id=\"empty\">{}</p>",
            escape(why)
        );
    }
    out.push_str("<nav>");
    for (i, s) in r.sections.iter().enumerate() {
        let _ = write!(
            out,
            "<a href=\"#{}\">{}. {}</a>",
            s.id,
            i + 1,
            escape(&s.title)
        );
    }
    out.push_str("</nav>\n");
    let _ = writeln!(
        out,
        "<p class=\"note\">Each section names its SQL; it runs as is, over the same data and \
         window, with <code>{} \"…\"</code>.</p>",
        escape(&r.check_command)
    );
    out.push_str("</header>\n<main>\n");
    for (i, s) in r.sections.iter().enumerate() {
        section(&mut out, i + 1, s);
    }
    let _ = writeln!(
        out,
        "</main>\n<footer>Written by dnsql {} (dnsledger). This file is self-contained: no \
         script, font, image or style is loaded from anywhere.</footer>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION")
    );
    out
}

fn section(out: &mut String, n: usize, s: &Section) {
    let _ = writeln!(
        out,
        "<section id=\"{}\">\n<h2>{n}. {}</h2>",
        s.id,
        escape(&s.title)
    );
    for note in &s.notes {
        match note {
            Note::Info(t) => {
                let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(t));
            }
            Note::Warn(t) => {
                let _ = writeln!(out, "<p class=\"warn\">{}</p>", escape(t));
            }
        }
    }
    for c in &s.charts {
        out.push_str("<figure>\n<div class=\"chart\">\n");
        // The SVG is plotters' (its text escaped by the SVG backend).
        out.push_str(&c.svg);
        let _ = write!(
            out,
            "</div>\n<figcaption>{}<ul class=\"legend\">",
            escape(&c.caption)
        );
        for (label, colour) in &c.legend {
            let _ = write!(
                out,
                "<li><span class=\"sw\" style=\"background:{}\"></span>{}</li>",
                escape(colour),
                escape(label)
            );
        }
        out.push_str("</ul></figcaption>\n</figure>\n");
    }
    for t in &s.tables {
        table(out, t);
    }
    for (caption, text) in &s.transcripts {
        let _ = writeln!(
            out,
            "<h3>{}</h3>\n<pre class=\"dig\">{}</pre>",
            escape(caption),
            escape(text.trim_end())
        );
    }
    for q in &s.sql {
        let _ = write!(
            out,
            "<details class=\"sql\" open><summary>SQL: {}</summary>",
            escape(&q.caption)
        );
        if let Some(cmd) = &q.command {
            let _ = write!(out, "<p>Command: <code>{}</code></p>", escape(cmd));
        }
        if !q.sql.is_empty() {
            let _ = write!(out, "<pre class=\"sql\">{}</pre>", escape(&q.sql));
        }
        out.push_str("</details>\n");
    }
    out.push_str("</section>\n");
}

/// Cells longer than this many characters wrap (the others stay on one line).
const LONG_CELL: usize = 32;

fn table(out: &mut String, t: &Table) {
    let _ = write!(
        out,
        "<div class=\"scroll\"><table id=\"{}\">",
        escape(&t.id)
    );
    if !t.caption.is_empty() {
        let _ = write!(out, "<caption>{}</caption>", escape(&t.caption));
    }
    out.push_str("<thead><tr>");
    for c in &t.columns {
        let _ = write!(out, "<th>{}</th>", escape(c));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    if t.rows.is_empty() {
        let _ = writeln!(
            out,
            "<tr><td class=\"empty\" colspan=\"{}\">no rows</td></tr>",
            t.columns.len().max(1)
        );
    }
    for row in &t.rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let num = t.numeric.get(i).copied().unwrap_or(false);
            match cell {
                None => out.push_str("<td class=\"null\"></td>"),
                Some(v) if num => {
                    let _ = write!(out, "<td class=\"num\">{}</td>", escape(v));
                }
                Some(v) if v.chars().count() > LONG_CELL => {
                    let _ = write!(out, "<td class=\"long\">{}</td>", escape(v));
                }
                Some(v) => {
                    let _ = write!(out, "<td>{}</td>", escape(v));
                }
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_controls_and_bidi() {
        assert_eq!(
            escape("<img src=x onerror='a()'>&\"\u{202E}\u{0}"),
            "&lt;img src=x onerror=&#39;a()&#39;&gt;&amp;&quot;\\u{202e}\\u{0}"
        );
        assert_eq!(escape("plain.example.com"), "plain.example.com");
    }

    #[test]
    fn tables_escape_cells_and_say_when_empty() {
        let mut out = String::new();
        table(
            &mut out,
            &Table {
                id: "t".into(),
                caption: String::new(),
                columns: vec!["qname".into(), "n".into()],
                rows: vec![
                    vec![Some("<b>x</b>.evil".into()), Some("3".into())],
                    vec![None, None],
                ],
                numeric: vec![false, true],
            },
        );
        assert!(
            out.contains("<td>&lt;b&gt;x&lt;/b&gt;.evil</td><td class=\"num\">3</td>"),
            "{out}"
        );
        assert!(out.contains("<td class=\"null\"></td>"), "{out}");
        let mut empty = String::new();
        table(
            &mut empty,
            &Table {
                id: "e".into(),
                columns: vec!["a".into()],
                ..Table::default()
            },
        );
        assert!(empty.contains("no rows"), "{empty}");
    }
}
