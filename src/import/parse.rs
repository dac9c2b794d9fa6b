//! HAProxy's configuration syntax: lines split into words as HAProxy 2.6 splits them, grouped
//! into sections.
//!
//! The rules are those of HAProxy's `parse_line` (section 2.2 of its configuration manual): an
//! unquoted `#` starts a comment; spaces separate words unless escaped (`\ `) or quoted; double
//! quotes allow `${VAR}` environment references, single quotes allow nothing; a backslash escapes
//! a space, `\`, `#`, a quote, `$` (inside double quotes), and gives CR, LF and TAB for `\r`, `\n`,
//! `\t` and a byte for `\xHH`; any other backslash is kept as it is. There are no continuation
//! lines: a line ends at its newline, a trailing backslash included.

/// Most words on one line (HAProxy's `MAX_LINE_ARGS`).
pub const MAX_WORDS: usize = 64;

/// One word of a line, quotes and escapes resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The text; an environment reference HAProxy would expand is kept as `${NAME}` (or
    /// `${NAME-default}`), since the importer does not run where HAProxy ran.
    pub text: String,
    /// The word holds an environment reference.
    pub env: bool,
}

/// One line that has words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number in the file.
    pub number: usize,
    /// The line as written, without its newline and surrounding spaces.
    pub raw: String,
    /// Its words.
    pub words: Vec<Word>,
    /// The line of the `.if` whose block holds this line, if any.
    pub in_condition: Option<usize>,
}

impl Line {
    /// The word at `i`, or `""`.
    pub fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", |w| w.text.as_str())
    }

    /// The words from `i` on.
    pub fn rest(&self, i: usize) -> &[Word] {
        self.words.get(i..).unwrap_or(&[])
    }
}

/// What a section is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionKind {
    /// `global`.
    Global,
    /// `defaults [name]`.
    Defaults,
    /// `frontend <name>`.
    Frontend,
    /// `backend <name>`.
    Backend,
    /// `listen <name>`: a frontend and its backend in one.
    Listen,
    /// Any other section HAProxy knows (`resolvers`, `peers`, `userlist`, ...).
    Other(String),
}

/// A section: its header line and the lines under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its kind.
    pub kind: SectionKind,
    /// The name (the header's second word), if any.
    pub name: Option<String>,
    /// The header line.
    pub header: Line,
    /// The lines under it, in order.
    pub body: Vec<Line>,
}

impl Section {
    /// The last line number the section covers (its last line with words).
    pub fn last_line(&self) -> usize {
        self.body.last().map_or(self.header.number, |l| l.number)
    }
}

/// Input HAProxy itself would refuse, with the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The section keywords of HAProxy 2.6 (and a few later ones, so that newer files still group).
const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "peers",
    "userlist",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
    "log-forward",
    "crt-store",
    "traces",
    "acme",
];

/// Splits `text` into sections.
///
/// # Errors
/// A line HAProxy would refuse: an unmatched quote or brace, a bad `\x` sequence or variable
/// name, more than [`MAX_WORDS`] words, or a keyword before the first section.
pub fn parse(text: &str) -> Result<Vec<Section>, ParseError> {
    let mut sections: Vec<Section> = Vec::new();
    let mut conditions: Vec<usize> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let err = |message: String| ParseError {
            line: number,
            message,
        };
        let words = words(raw).map_err(err)?;
        let Some(first) = words.first() else {
            continue;
        };
        let keyword = first.text.clone();
        match keyword.as_str() {
            ".if" => conditions.push(number),
            ".endif" if conditions.pop().is_none() => {
                return Err(err("`.endif` without `.if`".into()));
            }
            _ => {}
        }
        let line = Line {
            number,
            raw: raw.trim().to_string(),
            words,
            in_condition: conditions.last().copied(),
        };
        if SECTIONS.contains(&keyword.as_str()) {
            sections.push(Section {
                kind: kind_of(&keyword),
                name: line.words.get(1).map(|w| w.text.clone()),
                header: line,
                body: Vec::new(),
            });
        } else if let Some(current) = sections.last_mut() {
            current.body.push(line);
        } else if !keyword.starts_with('.') {
            return Err(err(format!(
                "`{keyword}` before any section (global, defaults, frontend, backend, listen)"
            )));
        }
    }
    if let Some(open) = conditions.last() {
        return Err(ParseError {
            line: *open,
            message: "`.if` without `.endif`".into(),
        });
    }
    Ok(sections)
}

fn kind_of(keyword: &str) -> SectionKind {
    match keyword {
        "global" => SectionKind::Global,
        "defaults" => SectionKind::Defaults,
        "frontend" => SectionKind::Frontend,
        "backend" => SectionKind::Backend,
        "listen" => SectionKind::Listen,
        other => SectionKind::Other(other.to_string()),
    }
}

/// The words of one line, as HAProxy splits them.
///
/// # Errors
/// What HAProxy would say about the line: an unmatched quote or brace, a bad `\x` sequence or
/// variable name, or too many words.
pub fn words(line: &str) -> Result<Vec<Word>, String> {
    let mut out: Vec<Word> = Vec::new();
    let mut cur: Option<Word> = None;
    let (mut squote, mut dquote) = (false, false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' if !squote && !dquote => break,
            '"' if !squote => {
                open(&mut cur);
                dquote = !dquote;
            }
            '\'' if !dquote => {
                open(&mut cur);
                squote = !squote;
            }
            '\\' if !squote => {
                let escaped = escape(&mut chars, dquote)?;
                open(&mut cur).text.push_str(&escaped);
            }
            '$' if dquote => {
                let reference = env_reference(&mut chars)?;
                let w = open(&mut cur);
                w.text.push_str(&reference);
                w.env = true;
            }
            c if c.is_whitespace() && !squote && !dquote => {
                if let Some(w) = cur.take() {
                    out.push(w);
                }
            }
            c => open(&mut cur).text.push(c),
        }
        if out.len() > MAX_WORDS {
            return Err(format!("too many words (HAProxy allows {MAX_WORDS})"));
        }
    }
    if squote || dquote {
        return Err("unmatched quote".into());
    }
    out.extend(cur);
    if out.len() > MAX_WORDS {
        return Err(format!("too many words (HAProxy allows {MAX_WORDS})"));
    }
    Ok(out)
}

/// The word being read, started if none is.
fn open(cur: &mut Option<Word>) -> &mut Word {
    cur.get_or_insert_with(|| Word {
        text: String::new(),
        env: false,
    })
}

/// What a backslash (outside single quotes) stands for, the characters after it consumed.
fn escape(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    dquote: bool,
) -> Result<String, String> {
    let out = match chars.peek().copied() {
        Some(e @ (' ' | '\\' | '#' | '\'' | '"')) => e,
        Some('$') if dquote => '$',
        Some('t') => '\t',
        Some('n') => '\n',
        Some('r') => '\r',
        Some('x') => {
            chars.next();
            let hex: String = chars.by_ref().take(2).collect();
            if hex.len() != 2 || !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return Err("truncated or invalid hexadecimal sequence".into());
            }
            let byte = u8::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
            return Ok(char::from(byte).to_string());
        }
        // Any other combination is no escape: the backslash stays.
        _ => return Ok("\\".into()),
    };
    chars.next();
    Ok(out.to_string())
}

/// An environment reference after its `$`, as `${NAME}` (or `${NAME-default}`, `${NAME[*]}`).
fn env_reference(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, String> {
    let brace = chars.peek() == Some(&'{');
    if brace {
        chars.next();
    }
    let mut name = String::new();
    match chars.peek().copied() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '.' => {
            name.push(c);
            chars.next();
        }
        _ => return Err("forbidden first character in environment variable name".into()),
    }
    while let Some(c) = chars.peek().copied() {
        if !(c.is_ascii_alphanumeric() || c == '_') {
            break;
        }
        name.push(c);
        chars.next();
    }
    if !brace {
        return Ok(format!("${{{name}}}"));
    }
    let mut tail = String::new();
    loop {
        match chars.next() {
            Some('}') => return Ok(format!("${{{name}{tail}}}")),
            Some(c) if tail.starts_with('-') || (tail.is_empty() && (c == '-' || c == '[')) => {
                tail.push(c);
            }
            Some(c) if tail.starts_with('[') && tail.len() < 3 => tail.push(c),
            _ => return Err("unmatched brace in environment variable name".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<String> {
        words(line).unwrap().into_iter().map(|w| w.text).collect()
    }

    #[test]
    fn spaces_split_words_and_escapes_resolve_as_haproxy_does() {
        assert_eq!(
            texts("  tcp-check send info\\ replication\\r\\n"),
            ["tcp-check", "send", "info replication\r\n"]
        );
        assert_eq!(texts("a\\\\b \\#c \\x41\\t"), ["a\\b", "#c", "A\t"]);
        // Not an escape: the backslash stays (a regex's `\1`).
        assert_eq!(texts("reqrep x \\1"), ["reqrep", "x", "\\1"]);
        assert_eq!(
            texts("a\\"),
            ["a\\"],
            "a trailing backslash is kept, no continuation"
        );
        assert!(words("a \\xZ1").is_err());
        assert!(words("a \\x4").is_err());
    }

    #[test]
    fn quotes_group_words_and_only_double_quotes_expand() {
        assert_eq!(
            texts("tcp-check send \"AUTH ${AUTH}\"\\r\\n"),
            ["tcp-check", "send", "AUTH ${AUTH}\r\n"]
        );
        let w = words("x \"$PASS\" '${NOT}' \"\\$5\"").unwrap();
        assert!(w[1].env && w[1].text == "${PASS}");
        assert!(
            !w[2].env && w[2].text == "${NOT}",
            "single quotes expand nothing"
        );
        assert!(!w[3].env && w[3].text == "$5");
        assert_eq!(texts("log \"${H-local}:514\""), ["log", "${H-local}:514"]);
        assert_eq!(
            texts("a \"\" b"),
            ["a", "", "b"],
            "an empty quoted word counts"
        );
        assert_eq!(texts("a'b c'\"d\""), ["ab cd"]);
        assert_eq!(
            texts("stats realm Haproxy\\ Statistics"),
            ["stats", "realm", "Haproxy Statistics"]
        );
        assert!(words("a \"b").is_err());
        assert!(words("a 'b").is_err());
        assert!(words("a \"${B\"").is_err());
        assert!(words("a \"$1\"").is_err());
    }

    #[test]
    fn comments_end_the_line_outside_quotes() {
        assert_eq!(texts("bind :6379 # the port"), ["bind", ":6379"]);
        assert_eq!(texts("a '#b' \"#c\" d#e"), ["a", "#b", "#c", "d"]);
        assert!(texts("   # only a comment").is_empty());
    }

    #[test]
    fn too_many_words_is_refused() {
        let line = vec!["w"; MAX_WORDS + 1].join(" ");
        assert!(words(&line).unwrap_err().contains("too many words"));
        assert_eq!(
            words(&vec!["w"; MAX_WORDS].join(" ")).unwrap().len(),
            MAX_WORDS
        );
    }

    #[test]
    fn lines_group_into_sections_with_their_numbers() {
        let text = "# c\nglobal\n  maxconn 100\n\ndefaults\n  mode tcp\nfrontend ft\n  bind :6379\nresolvers dns\n  nameserver a 1.1.1.1:53\n";
        let s = parse(text).unwrap();
        let kinds: Vec<_> = s.iter().map(|s| s.kind.clone()).collect();
        assert_eq!(
            kinds,
            [
                SectionKind::Global,
                SectionKind::Defaults,
                SectionKind::Frontend,
                SectionKind::Other("resolvers".into())
            ]
        );
        assert_eq!(s[2].name.as_deref(), Some("ft"));
        assert_eq!(s[2].body[0].number, 8);
        assert_eq!(s[2].body[0].raw, "bind :6379");
        assert_eq!(s[0].last_line(), 3);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("global\n  maxconn 1\nfrontend f\n  bind \":6379\n").unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.message.contains("quote"));
        let e = parse("\nbind :6379\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("before any section"), "{e}");
        assert_eq!(parse("global\n.if defined(X)\n").unwrap_err().line, 2);
        assert_eq!(parse("global\n.endif\n").unwrap_err().line, 2);
    }

    #[test]
    fn lines_inside_a_condition_know_it() {
        let s = parse("global\n.if defined(X)\n  maxconn 5\n.endif\n  nbthread 2\n").unwrap();
        assert_eq!(s[0].body[1].in_condition, Some(2));
        assert_eq!(s[0].body[3].in_condition, None);
    }
}
