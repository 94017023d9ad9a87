//! Standard output for results. A closed pipe (`outpost … | head`) ends the program quietly,
//! with the status a shell gives a program stopped by SIGPIPE (141), instead of a panic.

use std::io::Write;

/// Writes one line to standard output.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` for results: see [`line`].
#[macro_export]
macro_rules! out {
    () => { $crate::output::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::line(format_args!($($arg)*)) };
}

/// Sizes for people: `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    outpost_actors::disk::human(n)
}

/// A table whose columns are as wide as their widest cell (long OUs do not shift the others);
/// a note line printed under a row stays out of the widths.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    lines: Vec<Line>,
}

#[derive(Debug)]
enum Line {
    Row(Vec<String>),
    Note(String),
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|h| (*h).to_string()).collect(), lines: Vec::new() }
    }

    /// Adds a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) {
        self.lines.push(Line::Row(cells));
    }

    /// Adds a line under the last row, outside the columns.
    pub fn note(&mut self, text: String) {
        self.lines.push(Line::Note(text));
    }

    /// The table as lines: columns two spaces apart, the last one not padded.
    pub fn render(&self) -> Vec<String> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for line in &self.lines {
            if let Line::Row(cells) = line {
                for (w, c) in widths.iter_mut().zip(cells) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let format = |cells: &[String]| {
            let last = cells.len().saturating_sub(1);
            let mut out = String::new();
            for (i, c) in cells.iter().enumerate() {
                out.push_str(c);
                if i < last {
                    out.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
                }
            }
            out
        };
        let mut out = vec![format(&self.header)];
        for line in &self.lines {
            out.push(match line {
                Line::Row(cells) => format(cells),
                Line::Note(n) => n.clone(),
            });
        }
        out
    }

    /// Prints the table to standard output.
    pub fn print(&self) {
        for l in self.render() {
            crate::out!("{l}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell() {
        let mut t = Table::new(&["HOST", "OU", "SEEN"]);
        t.row(vec!["a.ex".into(), "OU=Very Long Organisational Unit,DC=ex".into(), "1s ago".into()]);
        t.note("    a note".into());
        t.row(vec!["long-host-name.example".into(), "OU=x".into(), "2m ago".into()]);
        let lines = t.render();
        assert_eq!(lines[0].find("SEEN"), Some(lines[1].find("1s ago").unwrap()), "{lines:#?}");
        assert_eq!(lines[1].find("1s ago"), lines[3].find("2m ago"), "{lines:#?}");
        assert_eq!(lines[0].find("OU"), lines[3].find("OU=x"));
        assert_eq!(lines[2], "    a note");
        assert!(!lines[1].ends_with(' '), "the last column is not padded");
    }
}
