//! Reading `dnsql report`'s page back in tests: a table's header and rows by its `id`.
//!
//! The page writes one `<tr>` per line and escapes text with five entities (see
//! `crates/query/src/report/html.rs`); this reader knows exactly that and nothing more.

/// HTML entities the report writes, back to text.
pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The header and the rows of the table with `id` (cells as text; NULL as ""). Panics,
/// naming the id, when the page has no such table.
pub fn table(html: &str, id: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let start = html
        .find(&format!("<table id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no table {id} on the page"));
    let end = start + html[start..].find("</table>").expect("table end");
    let t = &html[start..end];
    // `<td>`/`<td class=…>` (not `<thead>`), up to `</td>`.
    let cells = |row: &str, tag: &str| -> Vec<String> {
        let close = format!("</{tag}>");
        let mut out = Vec::new();
        let mut rest = row;
        while let Some(i) = rest.find(&format!("<{tag}")) {
            let after = &rest[i + 1 + tag.len()..];
            rest = after;
            if !after.starts_with('>') && !after.starts_with(' ') {
                continue;
            }
            let body = &after[after.find('>').expect("cell") + 1..];
            let end = body.find(&close).expect("cell end");
            out.push(unescape(&body[..end]));
            rest = &body[end..];
        }
        out
    };
    let head = &t[t.find("<thead>").expect("thead")..t.find("</thead>").expect("thead end")];
    let columns = cells(head, "th");
    let body = &t[t.find("<tbody>").expect("tbody")..];
    let rows = body
        .split("<tr>")
        .skip(1)
        .filter(|r| !r.contains("class=\"empty\""))
        .map(|r| cells(r, "td"))
        .collect();
    (columns, rows)
}

/// The text of a JSON value (a recipe's `--format json` cell) as the page's cells show it.
pub fn cell_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => format!(
            "[{}]",
            a.iter().map(cell_text).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

/// Whether a page cell shows the recipe's value (numbers compared as numbers).
pub fn same_cell(page: &str, recipe: &serde_json::Value) -> bool {
    let want = cell_text(recipe);
    match (page.parse::<f64>(), want.parse::<f64>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => page == want,
    }
}

/// Asserts that the page's table `id` holds the first `limit` rows of `recipe_json` (a
/// recipe's `--format json` output), cell for cell, in order.
pub fn assert_table_is_recipe(html: &str, id: &str, recipe_json: &str, limit: usize) {
    let (columns, rows) = table(html, id);
    let recipe: Vec<serde_json::Value> = recipe_json
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(!recipe.is_empty(), "{id}: the recipe has no rows");
    assert_eq!(
        rows.len(),
        recipe.len().min(limit),
        "{id}: rows on the page"
    );
    for (r, (row, want)) in rows.iter().zip(&recipe).enumerate() {
        for (c, col) in columns.iter().enumerate() {
            let w = &want[col.as_str()];
            assert!(
                same_cell(&row[c], w),
                "{id} row {r} column {col}: page `{}`, recipe `{w}`",
                row[c]
            );
        }
    }
}
