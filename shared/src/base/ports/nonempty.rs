//! The zero-row guard: every `Db::query` is rewritten so that its answer always holds at least one
//! row, and the marker is stripped from the answer again. Both adapters (Spin and native) send
//! the rewritten statement, so every native test runs the same SQL Spin gets.
//!
//! Why: Spin 4.0.0–4.0.2's synchronous `query` of `spin:postgres/postgres@4.0.0` never returns
//! when a statement yields zero rows (spinframework/spin#3671, fixed upstream after 4.0.2). The
//! guard never relies on that fix.
//!
//! How: the statement `M` (after any top-level `WITH` list, whose entries are kept in front) runs
//! once as a materialized CTE; its rows are numbered in the order `M` produced them; a one-row
//! `VALUES` is left-joined to them, so an empty `M` still answers one row whose number is NULL:
//!
//! ```sql
//! WITH <M's own CTEs,> __gs_q AS MATERIALIZED (M),
//!      __gs_n AS (SELECT row_number() OVER () AS __gs_row, * FROM __gs_q)
//! SELECT __gs_n.* FROM (VALUES (0)) AS __gs_one (z) LEFT JOIN __gs_n ON true
//! ORDER BY __gs_n.__gs_row
//! ```
//!
//! This holds for plain SELECTs, `RETURNING`, `FOR UPDATE SKIP LOCKED`, CTEs and data-modifying
//! CTEs (Postgres allows a data-modifying CTE only at the top level, which is why `M`'s own `WITH`
//! list is lifted instead of nested). Statements the guard cannot rewrite are refused on both hosts.

use std::sync::Arc;

use super::{DbError, Row, Value};

/// The name of the row-number column the guard adds in front of `M`'s columns.
pub const ROW_COLUMN: &str = "__gs_row";

/// Rewrite `sql` so that it always yields at least one row. Fails on statements that cannot yield
/// rows through a CTE (`SHOW`, `EXPLAIN`, transaction control, …): use `Db::execute` for those.
pub fn wrap(sql: &str) -> Result<String, DbError> {
    let body = sql.trim();
    let body = body.trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    let tokens = lex(body)?;
    let refuse = |why: &str| DbError::Query {
        code: None,
        message: format!("zero-row guard: {why}: {}", abbreviate(body)),
    };
    let Some(first) = tokens.first() else {
        return Err(refuse("empty statement"));
    };
    let (head, main_start) = if first.is_word(body, "with") {
        let mut i = 1;
        if tokens.get(i).is_some_and(|t| t.is_word(body, "recursive")) {
            i += 1;
        }
        let main = main_statement_start(body, &tokens, i)
            .ok_or_else(|| refuse("cannot find the statement after the WITH list"))?;
        // Everything up to the main statement (the WITH list, without a trailing comma).
        (
            Some(body[..tokens[main].start].trim_end()),
            tokens[main].start,
        )
    } else {
        (None, first.start)
    };
    let main = &body[main_start..];
    let lead = &tokens
        .iter()
        .find(|t| t.start >= main_start)
        .ok_or_else(|| refuse("no statement after the WITH list"))?;
    let starts_ok = lead.kind == Kind::Open
        || ["select", "insert", "update", "delete", "values", "table"]
            .iter()
            .any(|w| lead.is_word(body, w));
    if !starts_ok {
        return Err(refuse(
            "only SELECT, VALUES, TABLE and INSERT/UPDATE/DELETE … RETURNING can be queried",
        ));
    }
    let mut out = String::with_capacity(body.len() + 256);
    match head {
        Some(h) => {
            out.push_str(h);
            out.push_str(", ");
        }
        None => out.push_str("WITH "),
    }
    out.push_str("__gs_q AS MATERIALIZED (\n");
    out.push_str(main);
    out.push_str("\n), __gs_n AS (SELECT row_number() OVER () AS ");
    out.push_str(ROW_COLUMN);
    out.push_str(", * FROM __gs_q) SELECT __gs_n.* FROM (VALUES (0)) AS __gs_one (z) LEFT JOIN __gs_n ON true ORDER BY __gs_n.");
    out.push_str(ROW_COLUMN);
    Ok(out)
}

/// Strip the guard from an answer: drop the row-number column, and the one marker row of an
/// empty answer. `values` are the rows' values in column order, `columns` their names.
pub fn unwrap(columns: &[String], rows: Vec<Vec<Value>>) -> Result<Vec<Row>, DbError> {
    if columns.first().map(String::as_str) != Some(ROW_COLUMN) {
        return Err(DbError::Decode(format!(
            "zero-row guard: the answer does not start with {ROW_COLUMN}"
        )));
    }
    let names: Arc<[String]> = columns[1..].iter().cloned().collect();
    if rows.len() == 1 && rows[0].first() == Some(&Value::Null) {
        return Ok(Vec::new());
    }
    rows.into_iter()
        .map(|mut values| {
            if values.is_empty() {
                return Err(DbError::Decode("zero-row guard: an empty row".into()));
            }
            values.remove(0);
            Ok(Row::new(names.clone(), values))
        })
        .collect()
}

fn abbreviate(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    Open,
    Close,
    Comma,
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
    depth: usize,
}

impl Token {
    fn new(kind: Kind, start: usize, end: usize, depth: usize) -> Self {
        Token {
            kind,
            start,
            end,
            depth,
        }
    }

    fn is_word(&self, src: &str, w: &str) -> bool {
        self.kind == Kind::Word && src[self.start..self.end].eq_ignore_ascii_case(w)
    }
}

/// Where the statement after a top-level `WITH` list begins: the first token at depth 0 that
/// follows a CTE body's closing parenthesis and is neither `,` nor `AS` (a column list's
/// parenthesis is followed by `AS`) nor a `SEARCH` / `CYCLE` clause.
fn main_statement_start(src: &str, tokens: &[Token], from: usize) -> Option<usize> {
    let mut after_close = false;
    for (i, t) in tokens.iter().enumerate().skip(from) {
        if t.depth != 0 {
            continue;
        }
        match t.kind {
            Kind::Close => after_close = true,
            Kind::Comma => after_close = false,
            _ if after_close => {
                if ["as", "search", "cycle"].iter().any(|w| t.is_word(src, w)) {
                    after_close = false;
                } else {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Split `src` into the tokens the guard needs, skipping comments and the insides of string
/// literals, quoted identifiers and dollar-quoted strings. `depth` is the parenthesis depth a
/// token stands at (a closing parenthesis stands at the depth it returns to).
fn lex(src: &str) -> Result<Vec<Token>, DbError> {
    let b = src.as_bytes();
    let unterminated = |what: &str| DbError::Query {
        code: None,
        message: format!("zero-row guard: unterminated {what}: {}", abbreviate(src)),
    };
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            _ if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = src[i..].find('\n').map_or(b.len(), |n| i + n + 1);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut nest = 0usize;
                loop {
                    if i + 1 >= b.len() {
                        return Err(unterminated("comment"));
                    }
                    if b[i] == b'/' && b[i + 1] == b'*' {
                        nest += 1;
                        i += 2;
                    } else if b[i] == b'*' && b[i + 1] == b'/' {
                        nest -= 1;
                        i += 2;
                        if nest == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'\'' => {
                // E'…' strings take backslash escapes; the E was lexed as a word just before.
                let escapes = out.last().is_some_and(|t: &Token| {
                    t.end == start
                        && t.kind == Kind::Word
                        && src[t.start..t.end].eq_ignore_ascii_case("e")
                });
                i = quoted(b, i, b'\'', escapes).ok_or_else(|| unterminated("string"))?;
                out.push(Token::new(Kind::Other, start, i, depth));
            }
            b'"' => {
                i = quoted(b, i, b'"', false).ok_or_else(|| unterminated("quoted identifier"))?;
                out.push(Token::new(Kind::Word, start, i, depth));
            }
            b'$' => {
                // $1 is a parameter; $tag$ … $tag$ (or $$ … $$) a dollar-quoted string.
                let tag_end = src[i + 1..]
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .map(|n| i + 1 + n);
                let is_param = b.get(i + 1).is_some_and(u8::is_ascii_digit);
                match tag_end {
                    Some(e) if !is_param && b[e] == b'$' => {
                        let tag = &src[i..=e];
                        let close = src[e + 1..]
                            .find(tag)
                            .ok_or_else(|| unterminated("dollar-quoted string"))?;
                        i = e + 1 + close + tag.len();
                    }
                    _ => {
                        i += 1;
                        while i < b.len() && b[i].is_ascii_digit() {
                            i += 1;
                        }
                    }
                }
                out.push(Token::new(Kind::Other, start, i, depth));
            }
            b'(' => {
                out.push(Token::new(Kind::Open, start, i + 1, depth));
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth.saturating_sub(1);
                out.push(Token::new(Kind::Close, start, i + 1, depth));
                i += 1;
            }
            b',' => {
                out.push(Token::new(Kind::Comma, start, i + 1, depth));
                i += 1;
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80)
                {
                    i += 1;
                }
                out.push(Token::new(Kind::Word, start, i, depth));
            }
            _ => {
                i += 1;
                out.push(Token::new(Kind::Other, start, i, depth));
            }
        }
    }
    Ok(out)
}

/// The index just past a literal that opens with `quote` at `i` (a doubled quote stays inside;
/// with `escapes`, so does a backslash-escaped character).
fn quoted(b: &[u8], mut i: usize, quote: u8, escapes: bool) -> Option<usize> {
    i += 1;
    while i < b.len() {
        if escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(sql: &str) -> String {
        wrap(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    #[test]
    fn a_plain_select_becomes_the_guarded_cte() {
        let s = w("SELECT id FROM devices WHERE organization_id = $1 ORDER BY name;");
        assert!(
            s.starts_with("WITH __gs_q AS MATERIALIZED (\nSELECT id FROM devices WHERE organization_id = $1 ORDER BY name\n)"),
            "{s}"
        );
        assert!(s.ends_with("ORDER BY __gs_n.__gs_row"), "{s}");
    }

    #[test]
    fn a_with_list_is_kept_in_front_and_the_main_statement_guarded() {
        let sql = "WITH RECURSIVE a (x, y) AS (SELECT 1, 2), b AS MATERIALIZED (UPDATE t SET v = 1 RETURNING id) \
                   SELECT a.x, b.id FROM a, b";
        let s = w(sql);
        assert!(
            s.starts_with("WITH RECURSIVE a (x, y) AS (SELECT 1, 2), b AS MATERIALIZED (UPDATE t SET v = 1 RETURNING id), __gs_q AS MATERIALIZED (\nSELECT a.x, b.id FROM a, b\n)"),
            "{s}"
        );
    }

    #[test]
    fn parentheses_and_keywords_inside_literals_and_comments_do_not_count() {
        let sql = "WITH a AS (SELECT ')' AS p, E'\\') select' AS q, \"we)ird\" FROM t -- ) select\n /* ) /* nested ) */ select */ \
                   WHERE x = $$ ) SELECT $$ AND y = $tag$)$tag$) DELETE FROM t WHERE id = $1 RETURNING id";
        let s = w(sql);
        assert!(
            s.contains("), __gs_q AS MATERIALIZED (\nDELETE FROM t WHERE id = $1 RETURNING id\n)"),
            "{s}"
        );
    }

    #[test]
    fn statements_that_cannot_yield_rows_through_a_cte_are_refused() {
        for sql in [
            "SHOW search_path",
            "BEGIN",
            "EXPLAIN SELECT 1",
            "",
            "WITH a AS (SELECT 1)",
            "SELECT ')",
        ] {
            assert!(wrap(sql).is_err(), "{sql} was accepted");
        }
    }

    #[test]
    fn unwrap_drops_the_marker_row_and_the_row_number() {
        let cols: Vec<String> = vec![ROW_COLUMN.into(), "id".into()];
        assert!(
            unwrap(&cols, vec![vec![Value::Null, Value::Null]])
                .unwrap()
                .is_empty()
        );
        let rows = unwrap(
            &cols,
            vec![
                vec![Value::Int64(1), Value::Int32(7)],
                vec![Value::Int64(2), Value::Null],
            ],
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].get::<i32>("id").unwrap(), 7);
        assert_eq!(rows[1].get::<Option<i32>>("id").unwrap(), None);
        assert!(unwrap(&["id".to_string()], vec![]).is_err());
    }
}
