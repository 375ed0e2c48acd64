//! Where each key of rum.toml sits in the text, so that problems found after
//! parsing can still name a line and column.

use std::fmt;
use std::ops::Range;
use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A dotted key path such as `ports[1].host`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    pub fn root() -> Self {
        Self::default()
    }

    pub fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// The last table key of the path (`host` for `ports[1].host`).
    pub fn leaf_key(&self) -> Option<&str> {
        self.0.iter().rev().find_map(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            Segment::Index(_) => None,
        })
    }

    pub fn parent(&self) -> Option<Self> {
        let mut path = self.clone();
        path.0.pop().map(|_| path)
    }

    /// The path up to its last table key (`fs.ntfs` for `fs.ntfs[0]`).
    pub fn trim_indices(&self) -> Self {
        let mut path = self.clone();
        while matches!(path.0.last(), Some(Segment::Index(_))) {
            path.0.pop();
        }
        path
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub fn of_offset(source: &str, offset: usize) -> Self {
        let before = &source[..offset.min(source.len())];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

struct Entry {
    path: KeyPath,
    key: Range<usize>,
    value: Range<usize>,
    is_leaf: bool,
}

/// Every key of a parsed document with the spans of its key and value.
pub struct SpanIndex {
    entries: Vec<Entry>,
}

impl SpanIndex {
    /// Indexes `source`; a document that does not parse yields an empty index.
    pub fn new(source: &str) -> Self {
        let mut entries = Vec::new();
        if let Ok(table) = DeTable::parse(source) {
            walk_table(table.get_ref(), &KeyPath::root(), &mut entries);
        }
        Self { entries }
    }

    /// The span to show for `path`: the value of a leaf, else the key; falls
    /// back to the nearest ancestor that is written in the file.
    pub fn span_of(&self, path: &KeyPath) -> Option<Range<usize>> {
        let mut current = Some(path.clone());
        while let Some(path) = current {
            if let Some(entry) = self.entries.iter().find(|e| e.path == path) {
                return Some(if entry.is_leaf && !entry.value.is_empty() {
                    entry.value.clone()
                } else {
                    entry.key.clone()
                });
            }
            current = path.parent();
        }
        None
    }

    /// The deepest key whose key or value span contains `offset`.
    pub fn path_at(&self, offset: usize) -> Option<&KeyPath> {
        self.entries
            .iter()
            .filter(|e| e.key.contains(&offset) || e.value.contains(&offset))
            .max_by_key(|e| e.path.segments().len())
            .map(|e| &e.path)
    }
}

fn walk_table(table: &DeTable<'_>, path: &KeyPath, entries: &mut Vec<Entry>) {
    for (key, value) in table.iter() {
        let path = path.key(key.get_ref());
        walk_value(value.get_ref(), &path, key.span(), value.span(), entries);
    }
}

fn walk_value(
    value: &DeValue<'_>,
    path: &KeyPath,
    key: Range<usize>,
    span: Range<usize>,
    entries: &mut Vec<Entry>,
) {
    let is_leaf = !matches!(value, DeValue::Table(_) | DeValue::Array(_));
    entries.push(Entry {
        path: path.clone(),
        key: key.clone(),
        value: span,
        is_leaf,
    });
    match value {
        DeValue::Table(table) => walk_table(table, path, entries),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_key = if item.span().is_empty() {
                    key.clone()
                } else {
                    item.span()
                };
                walk_value(
                    item.get_ref(),
                    &path.index(i),
                    item_key,
                    item.span(),
                    entries,
                );
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str =
        "name = \"x\"\n[resources]\ncpus = 2\n\n[[ports]]\nhost = 80\n\n[[ports]]\nhost = 81\n";

    #[test]
    fn finds_leaf_values() {
        let index = SpanIndex::new(DOC);
        let span = index
            .span_of(&KeyPath::root().key("resources").key("cpus"))
            .unwrap();
        assert_eq!(&DOC[span.clone()], "2");
        assert_eq!(
            Location::of_offset(DOC, span.start),
            Location { line: 3, column: 8 }
        );
    }

    #[test]
    fn finds_array_of_tables_items() {
        let index = SpanIndex::new(DOC);
        let path = KeyPath::root().key("ports").index(1).key("host");
        let span = index.span_of(&path).unwrap();
        assert_eq!(&DOC[span.clone()], "81");
        assert_eq!(index.path_at(span.start), Some(&path));
    }

    #[test]
    fn falls_back_to_ancestors() {
        let index = SpanIndex::new(DOC);
        let span = index
            .span_of(&KeyPath::root().key("resources").key("disk"))
            .unwrap();
        assert_eq!(&DOC[span], "resources");
    }

    #[test]
    fn displays_paths() {
        let path = KeyPath::root().key("fs").key("ext4").index(0).key("drive");
        assert_eq!(path.to_string(), "fs.ext4[0].drive");
        assert_eq!(path.leaf_key(), Some("drive"));
    }
}
