//! Diagnostics: problems found in a flow file, each with its position.

use std::cell::RefCell;
use std::fmt;

/// A place in a flow file: 1-based line and column, and the byte offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
    pub offset: u32,
}

impl Pos {
    pub fn new(line: u32, col: u32) -> Self {
        Self {
            line,
            col,
            offset: 0,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One problem in a flow file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Pos,
    pub message: String,
}

impl Diagnostic {
    pub fn new(pos: Pos, message: impl Into<String>) -> Self {
        Self {
            pos,
            message: message.into(),
        }
    }

    /// `FILE:LINE:COL: error: MESSAGE`, the format of `weir validate`.
    pub fn render(&self, file: &str) -> String {
        format!(
            "{file}:{}:{}: error: {}",
            self.pos.line, self.pos.col, self.message
        )
    }
}

/// Collects every problem of a file, so that all are reported at once; and
/// the `nodes.X` and `secrets.X` its expressions read, which can only be
/// checked once the whole flow is read.
#[derive(Debug, Default)]
pub struct Diags {
    list: RefCell<Vec<Diagnostic>>,
    refs: RefCell<Vec<crate::script::Reference>>,
}

impl Diags {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn error(&self, pos: Pos, message: impl Into<String>) {
        self.list.borrow_mut().push(Diagnostic::new(pos, message));
    }

    pub fn push(&self, diagnostic: Diagnostic) {
        self.list.borrow_mut().push(diagnostic);
    }

    /// Notes references an expression makes.
    pub fn references(&self, refs: &[crate::script::Reference]) {
        self.refs.borrow_mut().extend_from_slice(refs);
    }

    /// How many references are noted so far (see [`Diags::take_references`]).
    pub fn references_mark(&self) -> usize {
        self.refs.borrow().len()
    }

    /// The references noted since `mark`, taken out.
    pub fn take_references(&self, mark: usize) -> Vec<crate::script::Reference> {
        let mut refs = self.refs.borrow_mut();
        let mark = mark.min(refs.len());
        refs.split_off(mark)
    }

    pub fn len(&self) -> usize {
        self.list.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.borrow().is_empty()
    }

    /// The problems in file order.
    pub fn into_sorted(self) -> Vec<Diagnostic> {
        let mut list = self.list.into_inner();
        list.sort_by_key(|d| (d.pos.line, d.pos.col));
        list.dedup();
        list
    }
}
