//! A plain SQL dump (`pg_dump --format=p`, Odoo's `dump.sql`) run over the wire, never by `psql`.
//!
//! `psql` reads a script as its own commands too: `\connect` logs in again (as anyone the database
//! container's trusted socket lets in, the superuser included), `\!` runs a shell, `\copy … program`
//! and `\o |…` run programs. A dump is data from outside, so none of that may happen: its statements
//! go to the server as they are, on the connection of the role restoring it, and the data of each
//! `COPY … FROM stdin` streams through the protocol. The only commands `pg_dump` itself writes,
//! `\restrict` and `\unrestrict`, are skipped; any other refuses the dump.
//!
//! The text is read as `psql`'s lexer reads it (quotes, dollar quotes, comments, parentheses,
//! `BEGIN ATOMIC` bodies) only to know where statements end: they are sent in batches, and a
//! `COPY … FROM stdin` switches to its data. A misreading can only make the server refuse the text;
//! nothing but SQL ever runs, as the restoring role.

use std::collections::VecDeque;
use std::io::Cursor;

use futures_util::SinkExt;
use tokio::io::AsyncReadExt;

use super::{DbError, sql_error};

/// Statements are sent once this much SQL is pending at a statement's end.
const BATCH: usize = 8 << 20;
/// The most SQL held without a statement's end.
const STATEMENT_MAX: usize = 256 << 20;
/// What is read at a time, and so the size of a chunk of `COPY` data.
const CHUNK: usize = 256 << 10;
/// The commands `pg_dump` writes into its own scripts (they guard `psql`, and mean nothing here).
const SKIPPED: [&str; 2] = ["restrict", "unrestrict"];

/// Runs the plain dump read from `source` on `client`: batches of statements, and the data of each
/// `COPY … FROM stdin` streamed. The first error stops it, as `psql -v ON_ERROR_STOP=1` would.
pub(super) async fn run(
    client: &tokio_postgres::Client,
    source: crate::Source<'_>,
) -> Result<(), DbError> {
    let mut script = Script::new(source);
    while let Some(piece) = script.next().await? {
        match piece {
            Piece::Sql { text, line } => client
                .batch_execute(&text)
                .await
                .map_err(|e| sql_error(&format!("the dump's statements from line {line}"), e))?,
            Piece::Copy { statement, line } => {
                let what = format!("the COPY on line {line}");
                let sink = client
                    .copy_in::<_, Cursor<Vec<u8>>>(statement.as_str())
                    .await
                    .map_err(|e| sql_error(&what, e))?;
                let mut sink = std::pin::pin!(sink);
                while let Some(chunk) = script.copy_chunk().await? {
                    sink.send(Cursor::new(chunk))
                        .await
                        .map_err(|e| sql_error(&what, e))?;
                }
                sink.finish().await.map_err(|e| sql_error(&what, e))?;
            }
        }
    }
    Ok(())
}

/// What the script asks of the server, in order.
#[derive(Debug, PartialEq)]
pub(super) enum Piece {
    /// Whole statements, sent as one batch; `line` is the one they start on.
    Sql { text: String, line: u64 },
    /// A `COPY … FROM stdin`, whose data follows ([`Script::copy_chunk`]).
    Copy { statement: String, line: u64 },
}

/// A dump being read: its statements in [`Piece`]s, then each `COPY`'s data in chunks.
pub(super) struct Script<'a> {
    source: crate::Source<'a>,
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    pos: usize,
    eof: bool,
    /// Lines read so far.
    lines: u64,
    lexer: Lexer,
    /// SQL not sent yet, the line it starts on, and where its last whole statement ends.
    pending: Vec<u8>,
    pending_line: u64,
    boundary: usize,
    ready: VecDeque<Piece>,
    /// Reading a `COPY`'s data; `mid_line` when `pos` is not at the start of one of its lines.
    in_copy: bool,
    mid_line: bool,
    finished: bool,
}

impl<'a> Script<'a> {
    pub(super) fn new(source: crate::Source<'a>) -> Self {
        Script {
            source,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            lines: 0,
            lexer: Lexer::default(),
            pending: Vec::new(),
            pending_line: 1,
            boundary: 0,
            ready: VecDeque::new(),
            in_copy: false,
            mid_line: false,
            finished: false,
        }
    }

    /// The next piece; `None` at the end of the dump. After a [`Piece::Copy`], its data must be
    /// read with [`copy_chunk`](Self::copy_chunk) first.
    pub(super) async fn next(&mut self) -> Result<Option<Piece>, DbError> {
        loop {
            if let Some(piece) = self.ready.pop_front() {
                return Ok(Some(piece));
            }
            if self.in_copy {
                return Err(DbError::Failed(
                    "the data of a COPY was not read before the statements after it".into(),
                ));
            }
            if self.finished {
                return Ok(None);
            }
            match self.read_line().await? {
                Some(line) => self.take_line(&line)?,
                None => {
                    // psql sends what is left at the end, complete or not: the server judges it.
                    self.finished = true;
                    self.send(self.pending.len())?;
                }
            }
        }
    }

    /// The next chunk of the current `COPY`'s data; `None` once its `\.` line is read.
    pub(super) async fn copy_chunk(&mut self) -> Result<Option<Vec<u8>>, DbError> {
        while self.in_copy {
            let data = &self.buf[self.pos..];
            let mut line_start = (!self.mid_line).then_some(0);
            let mut i = 0;
            while let Some(n) = data[i..].iter().position(|&b| b == b'\n') {
                let end = i + n;
                if line_start == Some(i) && matches!(&data[i..end], b"\\." | b"\\.\r") {
                    let chunk = data[..i].to_vec();
                    self.lines += count_lines(&chunk) + 1;
                    self.pos += end + 1;
                    self.in_copy = false;
                    self.mid_line = false;
                    return Ok((!chunk.is_empty()).then_some(chunk));
                }
                i = end + 1;
                line_start = Some(i);
            }
            // What is left has no line end yet: it may be the start of the `\.` line.
            let rest = &data[i..];
            let may_end = line_start == Some(i) && b"\\.\r".starts_with(rest);
            if self.eof {
                if !(may_end && rest.starts_with(b"\\.")) {
                    return Err(DbError::Invalid(format!(
                        "the dump ends inside the data of a COPY (line {})",
                        self.lines + count_lines(data) + 1
                    )));
                }
                let chunk = data[..i].to_vec();
                self.lines += count_lines(&chunk) + 1;
                self.pos = self.buf.len();
                self.in_copy = false;
                return Ok((!chunk.is_empty()).then_some(chunk));
            }
            let upto = if may_end { i } else { data.len() };
            if upto > 0 {
                let chunk = data[..upto].to_vec();
                self.lines += count_lines(&chunk);
                self.pos += upto;
                self.mid_line = !may_end;
                return Ok(Some(chunk));
            }
            self.fill().await?;
        }
        Ok(None)
    }

    /// Reads more of the source into the buffer; `false` at its end.
    async fn fill(&mut self) -> Result<bool, DbError> {
        if self.eof {
            return Ok(false);
        }
        self.buf.drain(..self.pos);
        self.pos = 0;
        let len = self.buf.len();
        self.buf.resize(len + CHUNK, 0);
        let read = self.source.read(&mut self.buf[len..]).await;
        let n = read.map_err(|e| DbError::Failed(format!("reading the dump: {e}")))?;
        self.buf.truncate(len + n);
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// The next line, without its `\n`; `None` at the end.
    async fn read_line(&mut self) -> Result<Option<Vec<u8>>, DbError> {
        let mut searched = 0;
        loop {
            let data = &self.buf[self.pos..];
            if let Some(n) = data[searched..].iter().position(|&b| b == b'\n') {
                let line = data[..searched + n].to_vec();
                self.pos += searched + n + 1;
                self.lines += 1;
                return Ok(Some(line));
            }
            searched = data.len();
            if searched > STATEMENT_MAX {
                return Err(self.too_long());
            }
            if !self.fill().await? {
                let line = self.buf[self.pos..].to_vec();
                self.pos = self.buf.len();
                if line.is_empty() {
                    return Ok(None);
                }
                self.lines += 1;
                return Ok(Some(line));
            }
        }
    }

    /// Adds a line to the pending SQL; queues what is complete.
    fn take_line(&mut self, line: &[u8]) -> Result<(), DbError> {
        if self.pending.is_empty() {
            self.pending_line = self.lines;
        }
        let start = self.pending.len();
        let mut sql_end = line.len();
        let mut copy = None;
        for event in self.lexer.line(line) {
            match event {
                Event::End { at, copy: false } => self.boundary = start + at,
                Event::End { at, copy: true } => {
                    copy = Some((self.boundary, start + at, at));
                    self.boundary = start + at;
                }
                Event::Command { at, name } if SKIPPED.contains(&name.as_str()) => sql_end = at,
                Event::Command { name, .. } => {
                    return Err(DbError::Invalid(format!(
                        "line {}: `\\{name}` is a psql command, not SQL: a restore runs the \
                         dump's SQL only",
                        self.lines
                    )));
                }
            }
        }
        self.pending.extend_from_slice(&line[..sql_end]);
        self.pending.push(b'\n');
        if let Some((from, to, at)) = copy {
            if !line[at..].iter().all(u8::is_ascii_whitespace) {
                return Err(DbError::Invalid(format!(
                    "line {}: a COPY … FROM stdin must end its line (its data starts on the next)",
                    self.lines
                )));
            }
            let statement = text(&self.pending[from..to], self.lines)?;
            self.send(from)?;
            self.ready.push_back(Piece::Copy {
                statement,
                line: self.lines,
            });
            self.pending.clear();
            self.boundary = 0;
            self.in_copy = true;
            self.mid_line = false;
        } else if self.boundary >= BATCH {
            self.send(self.boundary)?;
        } else if self.pending.len() - self.boundary > STATEMENT_MAX {
            return Err(self.too_long());
        }
        Ok(())
    }

    /// Queues the pending SQL up to `upto` (when it holds more than blanks) and keeps the rest.
    fn send(&mut self, upto: usize) -> Result<(), DbError> {
        let sql = &self.pending[..upto];
        if sql.iter().any(|b| !b.is_ascii_whitespace()) {
            let text = text(sql, self.pending_line)?;
            self.ready.push_back(Piece::Sql {
                text,
                line: self.pending_line,
            });
        }
        let rest = self.pending.split_off(upto);
        let sent_lines = count_lines(&self.pending);
        self.pending = rest;
        self.pending_line += sent_lines;
        self.boundary = 0;
        Ok(())
    }

    fn too_long(&self) -> DbError {
        DbError::Invalid(format!(
            "the dump holds over {} MiB of SQL without a statement's end (line {})",
            STATEMENT_MAX >> 20,
            self.lines
        ))
    }
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

fn text(bytes: &[u8], line: u64) -> Result<String, DbError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        DbError::Invalid(format!(
            "the dump's SQL from line {line} is not UTF-8 (restores read UTF-8 dumps)"
        ))
    })
}

/// What a line held, for the script.
#[derive(Debug, PartialEq)]
enum Event {
    /// A statement ended just before byte `at` of the line; `copy` when it was a
    /// `COPY … FROM stdin`.
    End { at: usize, copy: bool },
    /// A psql command starts at byte `at` (the rest of the line is its arguments).
    Command { at: usize, name: String },
}

/// Inside what the lexer is.
#[derive(Clone, Debug, Default, PartialEq)]
enum Within {
    #[default]
    Sql,
    /// `'…'`, or `E'…'` where a backslash escapes.
    Quote { escapes: bool },
    /// `"…"`
    Identifier,
    /// `$tag$…$tag$`
    Dollar(Vec<u8>),
    /// `/* … */`, nested this deep.
    Comment(u32),
}

/// `psql`'s reading of the text, line by line: where statements end and commands start.
#[derive(Debug, Default)]
struct Lexer {
    within: Within,
    parens: u32,
    /// `BEGIN`/`CASE` … `END` depth inside a `CREATE FUNCTION|PROCEDURE` (an SQL-standard body,
    /// whose semicolons do not end the statement).
    begins: u32,
    /// The current statement's first words, upper-cased.
    words: Vec<String>,
    previous: String,
    from_stdin: bool,
}

impl Lexer {
    fn line(&mut self, line: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut i = 0;
        while i < line.len() {
            let c = line[i];
            let next = line.get(i + 1).copied();
            match &mut self.within {
                Within::Quote { escapes } => {
                    if *escapes && c == b'\\' {
                        i += 2;
                        continue;
                    }
                    if c == b'\'' {
                        if next == Some(b'\'') {
                            i += 2;
                            continue;
                        }
                        self.within = Within::Sql;
                    }
                    i += 1;
                }
                Within::Identifier => {
                    if c == b'"' {
                        if next == Some(b'"') {
                            i += 2;
                            continue;
                        }
                        self.within = Within::Sql;
                    }
                    i += 1;
                }
                Within::Dollar(tag) => {
                    if line[i..].starts_with(tag) {
                        i += tag.len();
                        self.within = Within::Sql;
                    } else {
                        i += 1;
                    }
                }
                Within::Comment(depth) => {
                    if c == b'/' && next == Some(b'*') {
                        *depth += 1;
                        i += 2;
                    } else if c == b'*' && next == Some(b'/') {
                        *depth -= 1;
                        if *depth == 0 {
                            self.within = Within::Sql;
                        }
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
                Within::Sql => match c {
                    b'-' if next == Some(b'-') => break,
                    b'/' if next == Some(b'*') => {
                        self.within = Within::Comment(1);
                        i += 2;
                    }
                    b'\'' => {
                        let escapes = i > 0
                            && matches!(line[i - 1], b'E' | b'e')
                            && (i < 2 || !is_word_byte(line[i - 2]));
                        self.within = Within::Quote { escapes };
                        i += 1;
                    }
                    b'"' => {
                        self.within = Within::Identifier;
                        i += 1;
                    }
                    b'$' => match dollar_tag(line, i) {
                        Some(tag) => {
                            i += tag.len();
                            self.within = Within::Dollar(tag);
                        }
                        None => i += 1,
                    },
                    b'(' => {
                        self.parens += 1;
                        i += 1;
                    }
                    b')' => {
                        self.parens = self.parens.saturating_sub(1);
                        i += 1;
                    }
                    b';' => {
                        i += 1;
                        if self.parens == 0 && self.begins == 0 {
                            let copy =
                                self.words.first().is_some_and(|w| w == "COPY") && self.from_stdin;
                            events.push(Event::End { at: i, copy });
                            self.words.clear();
                            self.previous.clear();
                            self.from_stdin = false;
                        }
                    }
                    b'\\' => {
                        let name = line[i + 1..]
                            .iter()
                            .take_while(|b| !b.is_ascii_whitespace() && **b != b'\\')
                            .map(|&b| b as char)
                            .collect();
                        events.push(Event::Command { at: i, name });
                        return events;
                    }
                    c if is_word_start(c) => {
                        let len = 1 + line[i + 1..]
                            .iter()
                            .take_while(|b| is_word_byte(**b))
                            .count();
                        self.word(&line[i..i + len]);
                        i += len;
                    }
                    c if c.is_ascii_digit() => {
                        i += 1 + line[i + 1..]
                            .iter()
                            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_'))
                            .count();
                    }
                    _ => i += 1,
                },
            }
        }
        events
    }

    fn word(&mut self, word: &[u8]) {
        let word = String::from_utf8_lossy(word).to_ascii_uppercase();
        match word.as_str() {
            "BEGIN" | "CASE" if self.routine() => self.begins += 1,
            "END" => self.begins = self.begins.saturating_sub(1),
            _ => {}
        }
        if self.previous == "FROM" && word == "STDIN" {
            self.from_stdin = true;
        }
        if self.words.len() < 4 {
            self.words.push(word.clone());
        }
        self.previous = word;
    }

    /// Whether the statement is a `CREATE [OR REPLACE] FUNCTION|PROCEDURE` (as `psql` tells).
    fn routine(&self) -> bool {
        let words: Vec<&str> = self.words.iter().map(String::as_str).collect();
        matches!(
            words.as_slice(),
            ["CREATE", "FUNCTION" | "PROCEDURE", ..]
                | ["CREATE", "OR", "REPLACE", "FUNCTION" | "PROCEDURE", ..]
        )
    }
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_word_byte(b: u8) -> bool {
    is_word_start(b) || b.is_ascii_digit() || b == b'$'
}

/// The dollar-quote tag starting at `line[i]` (`$$`, `$body$`), if one does (`$1` is a parameter).
fn dollar_tag(line: &[u8], i: usize) -> Option<Vec<u8>> {
    if i > 0 && is_word_byte(line[i - 1]) {
        return None;
    }
    let rest = &line[i + 1..];
    let len = rest
        .iter()
        .take_while(|b| is_word_byte(**b) && **b != b'$')
        .count();
    let starts_well = len == 0 || is_word_start(rest[0]);
    (starts_well && rest.get(len) == Some(&b'$')).then(|| line[i..i + len + 2].to_vec())
}

#[cfg(test)]
mod tests {
    //! The script's reading of dumps, with no server: what is sent as SQL, what as `COPY` data,
    //! and what is refused.

    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::{DbError, Piece, Script};

    /// A source that hands out at most `step` bytes a read, so every boundary falls everywhere.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl tokio::io::AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self
                .step
                .min(buf.remaining())
                .min(self.data.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    /// What the script makes of `dump`: its pieces, each `COPY` followed by its data as one
    /// `Data` piece.
    async fn read(dump: &str, step: usize) -> Result<Vec<Read>, DbError> {
        let mut source = Trickle {
            data: dump.as_bytes().to_vec(),
            at: 0,
            step,
        };
        let mut script = Script::new(&mut source);
        let mut pieces = Vec::new();
        while let Some(piece) = script.next().await? {
            let copy = matches!(piece, Piece::Copy { .. });
            pieces.push(Read::Piece(piece));
            if copy {
                let mut data = Vec::new();
                while let Some(chunk) = script.copy_chunk().await? {
                    data.extend(chunk);
                }
                pieces.push(Read::Data(String::from_utf8(data).unwrap()));
            }
        }
        Ok(pieces)
    }

    #[derive(Debug, PartialEq)]
    enum Read {
        Piece(Piece),
        Data(String),
    }

    fn sql(text: &str, line: u64) -> Read {
        Read::Piece(Piece::Sql {
            text: text.into(),
            line,
        })
    }

    fn copy(statement: &str, line: u64) -> Read {
        Read::Piece(Piece::Copy {
            statement: statement.into(),
            line,
        })
    }

    /// Read whole, a byte at a time and in sevens: always the same pieces.
    async fn read_every_way(dump: &str) -> Result<Vec<Read>, DbError> {
        let whole = read(dump, usize::MAX).await;
        for step in [1, 7] {
            let again = read(dump, step).await;
            assert_eq!(
                format!("{whole:?}"),
                format!("{again:?}"),
                "read {step} byte(s) at a time"
            );
        }
        whole
    }

    #[tokio::test]
    async fn a_pg_dump_script_is_statements_and_copy_data() {
        let dump = "--\n-- PostgreSQL database dump\n--\n\n\\restrict AbC123\n\n\
                    SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\
                    CREATE TABLE public.res_partner (\n    id integer NOT NULL,\n    name text\n);\n\n\
                    COPY public.res_partner (id, name) FROM stdin;\n\
                    1\tAzure; Interior\n2\t\\N\n3\ta\\\\.b\n\\.\n\n\
                    SELECT pg_catalog.setval('public.res_partner_id_seq', 3, true);\n\
                    \\unrestrict AbC123\n";
        let pieces = read_every_way(dump).await.unwrap();
        assert_eq!(
            pieces,
            [
                sql(
                    "--\n-- PostgreSQL database dump\n--\n\n\n\n\
                     SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\
                     CREATE TABLE public.res_partner (\n    id integer NOT NULL,\n    name text\n);",
                    1
                ),
                copy("\n\nCOPY public.res_partner (id, name) FROM stdin;", 14),
                Read::Data("1\tAzure; Interior\n2\t\\N\n3\ta\\\\.b\n".into()),
                sql(
                    "\nSELECT pg_catalog.setval('public.res_partner_id_seq', 3, true);\n\n",
                    19
                ),
            ]
        );
    }

    #[tokio::test]
    async fn semicolons_and_copy_lines_inside_bodies_strings_and_comments_are_text() {
        let dump = "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$\n\
                    BEGIN\n  PERFORM 1;\nCOPY t FROM stdin;\n  RETURN 1;\nEND;\n$body$;\n\
                    CREATE FUNCTION g() RETURNS int LANGUAGE sql\n    BEGIN ATOMIC\n \
                    SELECT CASE WHEN true THEN 1 END;\n SELECT 2;\nEND;\n\
                    SELECT 'it''s; \\' , E'\\'; still' , \"a;\"\"b\" /* c; /* d; */ e; */ ;\n\
                    -- COPY t FROM stdin;\n\
                    CREATE RULE r AS ON INSERT TO t DO INSTEAD (SELECT 1; SELECT 2);\n\
                    SELECT $1, a$b FROM t;\n";
        let pieces = read_every_way(dump).await.unwrap();
        assert_eq!(
            pieces,
            [sql(dump, 1)],
            "one batch: no COPY, nothing refused"
        );
    }

    #[tokio::test]
    async fn psql_commands_refuse_the_dump() {
        for (dump, name) in [
            ("\\! touch /tmp/pwned\n", "!"),
            (
                "SELECT 1;\n\\connect - postgres\nCOPY x TO PROGRAM 'id';\n",
                "connect",
            ),
            ("SELECT 1; \\c postgres\n", "c"),
            ("\\copy t to program 'touch /tmp/pwned'\n", "copy"),
            ("\\o |touch /tmp/pwned\nSELECT 1;\n", "o"),
            ("SELECT 1 \\g |sh\n", "g"),
            ("CREATE TABLE t (x int);\n\\.\n", "."),
        ] {
            let err = read(dump, usize::MAX).await.unwrap_err();
            assert!(
                matches!(&err, DbError::Invalid(m) if m.contains(&format!("`\\{name}` is a psql command"))),
                "{dump:?}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn copy_data_ends_only_at_its_own_line() {
        // `\.` inside a row, a row starting with a backslash, a CRLF end line, then more.
        let dump = "COPY t (a) FROM stdin;\nx\\.\n\\N\n\\.\r\nCOPY u (b) FROM STDIN;\n\\.";
        let pieces = read_every_way(dump).await.unwrap();
        assert_eq!(
            pieces,
            [
                copy("COPY t (a) FROM stdin;", 1),
                Read::Data("x\\.\n\\N\n".into()),
                copy("COPY u (b) FROM STDIN;", 5),
                Read::Data(String::new()),
            ]
        );
        for unended in [
            "COPY t (a) FROM stdin;\n1\n",
            "COPY t (a) FROM stdin;\n1\n\\",
        ] {
            let err = read(unended, usize::MAX).await.unwrap_err();
            assert!(
                matches!(&err, DbError::Invalid(m) if m.contains("ends inside the data")),
                "{unended:?}: {err:?}"
            );
        }
        let err = read("COPY t FROM stdin; SELECT 1;\n\\.\n", usize::MAX)
            .await
            .unwrap_err();
        assert!(matches!(err, DbError::Invalid(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_dump_that_is_not_utf8_is_refused_clearly() {
        let mut source = std::io::Cursor::new(b"SELECT '\xff';\n".to_vec());
        let mut script = Script::new(&mut source);
        let err = script.next().await.unwrap_err();
        assert!(
            matches!(&err, DbError::Invalid(m) if m.contains("not UTF-8")),
            "{err:?}"
        );
    }
}
