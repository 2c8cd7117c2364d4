//! The optimized payload's graph text (`graph.nnef`) read into tract's NNEF syntax tree in one
//! pass. tract's own reader (nom, verbose errors, and a subscript rule that parses each operand
//! twice, so nested calls and arrays cost twice per level) took ~20 ms of int8 MobileNetV2's
//! ~65 ms load for its 100 KB of text; this one takes under 1 ms. It follows tract's grammar
//! rule for rule and gives the same tree on what tract reads (`tests/nnef_text.rs` and
//! `tests/payload.rs` compare them); a text it does not read (`None`) goes to tract's reader,
//! whose errors say what is wrong.

use tract_nnef::ast::{
    Argument, Assignment, Comprehension, Document, FragmentDecl, FragmentDef, GraphDef, Identifier,
    IfThenElse, Invocation, LValue, Literal, Parameter, RValue, Result_, Subscript, TypeName,
    TypeSpec,
};

/// A whole document: version, extensions, fragments, graph.
pub fn parse_document(text: &str) -> Option<Document> {
    let mut c = Cursor::new(text);
    let doc = c.document()?;
    c.end()?;
    Some(doc)
}

/// Fragment definitions only (tract's standard library).
pub fn parse_fragments(text: &str) -> Option<Vec<FragmentDef>> {
    let mut c = Cursor::new(text);
    let fragments = c.fragments()?;
    c.end()?;
    Some(fragments)
}

/// How deep expressions may nest before the reader gives the text to tract's (a hostile
/// payload must not overflow the stack; tract's writer nests a few levels).
const MAX_DEPTH: usize = 64;

struct Cursor<'t> {
    text: &'t str,
    pos: usize,
    depth: usize,
}

impl<'t> Cursor<'t> {
    fn new(text: &'t str) -> Self {
        Cursor {
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn rest(&self) -> &'t str {
        &self.text[self.pos..]
    }

    /// Spaces, tabs, line ends and `#` comments.
    fn skip(&mut self) {
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(self.pos) {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => self.pos += 1,
                b'#' => {
                    while let Some(&b) = bytes.get(self.pos) {
                        if b == b'\r' || b == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn end(&mut self) -> Option<()> {
        self.skip();
        (self.pos == self.text.len()).then_some(())
    }

    /// tract's `stag`: `t` between optional spaces (a prefix match, as tract's).
    fn tag(&mut self, t: &str) -> Option<()> {
        self.skip();
        if self.rest().starts_with(t) {
            self.pos += t.len();
            self.skip();
            Some(())
        } else {
            None
        }
    }

    /// [`Self::tag`] that leaves the cursor where it was when `t` is not next.
    fn try_tag(&mut self, t: &str) -> bool {
        let at = self.pos;
        if self.tag(t).is_some() {
            true
        } else {
            self.pos = at;
            false
        }
    }

    /// Runs `f`, putting the cursor back where it was when `f` fails.
    fn attempt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let (at, depth) = (self.pos, self.depth);
        let got = f(self);
        if got.is_none() {
            self.pos = at;
            self.depth = depth;
        }
        got
    }

    /// `item` separated by `,` (none at all included), as tract's `separated_list0`.
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Vec<T> {
        let mut items = Vec::new();
        let Some(first) = self.attempt(&mut item) else {
            return items;
        };
        items.push(first);
        loop {
            let at = self.pos;
            if !self.try_tag(",") {
                break;
            }
            match self.attempt(&mut item) {
                Some(next) => items.push(next),
                None => {
                    self.pos = at;
                    break;
                }
            }
        }
        items
    }

    fn document(&mut self) -> Option<Document> {
        self.tag("version")?;
        let version = self.numeric()?;
        self.tag(";")?;
        let mut extension = Vec::new();
        while let Some(ext) = self.attempt(Self::extension) {
            extension.push(ext);
        }
        let fragments = self.fragments()?;
        let graph_def = self.graph_def()?;
        Some(Document {
            version,
            extension,
            fragments,
            graph_def,
        })
    }

    fn extension(&mut self) -> Option<(Identifier, String)> {
        self.tag("extension")?;
        self.skip();
        let id = self.identifier()?;
        self.skip();
        let until = self.rest().find(';')?;
        let text = self.rest()[..until].to_string();
        self.pos += until;
        self.tag(";")?;
        Some((id, text))
    }

    fn fragments(&mut self) -> Option<Vec<FragmentDef>> {
        let mut fragments = Vec::new();
        loop {
            self.skip();
            if !self.rest().starts_with("fragment") {
                return Some(fragments);
            }
            fragments.push(self.fragment_def()?);
        }
    }

    fn fragment_def(&mut self) -> Option<FragmentDef> {
        let decl = self.fragment_decl()?;
        let body = if self.try_tag(";") {
            None
        } else {
            Some(self.body()?)
        };
        self.skip();
        Some(FragmentDef { decl, body })
    }

    fn fragment_decl(&mut self) -> Option<FragmentDecl> {
        self.tag("fragment")?;
        let id = self.identifier()?;
        let generic_decl = self.attempt(|c| {
            c.tag("<")?;
            c.tag("?")?;
            let name = c.attempt(|c| {
                c.tag("=")?;
                c.type_name()
            });
            c.tag(">")?;
            Some(name)
        });
        self.tag("(")?;
        let parameters = self.list(Self::parameter);
        self.tag(")")?;
        self.tag("->")?;
        self.tag("(")?;
        let results = self.list(|c| {
            let id = c.identifier()?;
            c.tag(":")?;
            let spec = c.type_spec()?;
            Some(Result_ { id, spec })
        });
        self.tag(")")?;
        Some(FragmentDecl {
            id,
            generic_decl,
            parameters,
            results,
        })
    }

    fn parameter(&mut self) -> Option<Parameter> {
        let id = self.identifier()?;
        self.tag(":")?;
        let spec = self.type_spec()?;
        let lit = self.attempt(|c| {
            c.tag("=")?;
            c.literal_expr()
        });
        Some(Parameter {
            id,
            spec,
            lit,
            doc: None,
        })
    }

    fn literal_expr(&mut self) -> Option<Literal> {
        self.skip();
        let lit = if let Some(lit) = self.attempt(Self::literal) {
            lit
        } else if self.try_tag("[") {
            let items = self.list(Self::literal);
            self.tag("]")?;
            Literal::Array(items)
        } else {
            self.tag("(")?;
            let items = self.list(Self::literal);
            self.tag(")")?;
            Literal::Tuple(items)
        };
        self.skip();
        Some(lit)
    }

    fn type_spec(&mut self) -> Option<TypeSpec> {
        let single = self.non_array_type()?;
        let at = self.pos;
        if self.try_tag("[") && self.try_tag("]") {
            return Some(TypeSpec::Array(Box::new(single)));
        }
        self.pos = at;
        Some(single)
    }

    fn non_array_type(&mut self) -> Option<TypeSpec> {
        if let Some(tuple) = self.attempt(|c| {
            c.tag("(")?;
            let items = c.list(Self::type_spec);
            c.tag(")")?;
            Some(TypeSpec::Tuple(items))
        }) {
            return Some(tuple);
        }
        if let Some(name) = self.attempt(Self::type_name) {
            return Some(TypeSpec::Single(name));
        }
        self.tag("tensor")?;
        self.tag("<")?;
        let name = self.type_name()?;
        self.tag(">")?;
        Some(TypeSpec::Tensor(name))
    }

    fn type_name(&mut self) -> Option<TypeName> {
        self.skip();
        let name = [
            ("integer", TypeName::Integer),
            ("scalar", TypeName::Scalar),
            ("logical", TypeName::Logical),
            ("string", TypeName::String),
            ("?", TypeName::Any),
        ]
        .into_iter()
        .find(|(word, _)| self.rest().starts_with(word))?;
        self.pos += name.0.len();
        self.skip();
        Some(name.1)
    }

    fn graph_def(&mut self) -> Option<GraphDef> {
        self.tag("graph")?;
        let id = self.identifier()?;
        self.tag("(")?;
        let parameters = self.list(Self::identifier);
        self.tag(")")?;
        self.tag("->")?;
        self.tag("(")?;
        let results = self.list(Self::identifier);
        self.tag(")")?;
        let body = self.body()?;
        self.skip();
        Some(GraphDef {
            id,
            parameters,
            results,
            body,
        })
    }

    fn body(&mut self) -> Option<Vec<Assignment>> {
        self.tag("{")?;
        let mut body = Vec::new();
        while let Some(assignment) = self.attempt(Self::assignment) {
            body.push(assignment);
        }
        self.tag("}")?;
        Some(body)
    }

    fn assignment(&mut self) -> Option<Assignment> {
        self.skip();
        let mut lefts = self.list(Self::lvalue);
        let left = if lefts.len() == 1 {
            lefts.remove(0)
        } else {
            LValue::Tuple(lefts)
        };
        self.tag("=")?;
        let right = self.rvalue()?;
        self.tag(";")?;
        Some(Assignment { left, right })
    }

    fn lvalue(&mut self) -> Option<LValue> {
        self.skip();
        let value = if self.try_tag("[") {
            let items = self.list(Self::lvalue);
            self.tag("]")?;
            LValue::Array(items)
        } else if self.try_tag("(") {
            let items = self.list(Self::lvalue);
            self.tag(")")?;
            LValue::Tuple(items)
        } else {
            let id = self.identifier()?;
            self.skip();
            LValue::Identifier(id)
        };
        Some(value)
    }

    /// `<rvalue-expr>`: tract's `ite` over its binary levels.
    fn rvalue(&mut self) -> Option<RValue> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        let value = self.if_else();
        self.depth -= 1;
        value
    }

    fn if_else(&mut self) -> Option<RValue> {
        let then = self.binary(0)?;
        self.skip();
        if !self.rest().starts_with("if") {
            return Some(then);
        }
        self.tag("if")?;
        let cond = self.binary(0)?;
        self.tag("else")?;
        let otherwise = self.binary(0)?;
        Some(RValue::IfThenElse(Box::new(IfThenElse {
            cond,
            then,
            otherwise,
        })))
    }

    /// The binary levels, loosest first (tract's `in_for`, `boolean`, `comp`, `add`, `mul`,
    /// `exp`), each left-associative; its operators are matched where the left operand ends
    /// (that operand has taken the spaces after it).
    fn binary(&mut self, level: usize) -> Option<RValue> {
        const LEVELS: [&[&str]; 6] = [
            &["in"],
            &["||", "&&"],
            &["==", "!=", "<=", ">=", "<", ">"],
            &["+", "-"],
            &["*", "/"],
            &["^"],
        ];
        let Some(operators) = LEVELS.get(level) else {
            return self.subscript();
        };
        let mut left = self.binary(level + 1)?;
        loop {
            let Some(op) = operators.iter().find(|op| self.rest().starts_with(**op)) else {
                return Some(left);
            };
            let at = self.pos;
            self.pos += op.len();
            match self.attempt(|c| c.binary(level + 1)) {
                Some(right) => {
                    left = RValue::Binary(Box::new(left), op.to_string(), Box::new(right))
                }
                None => {
                    self.pos = at;
                    return Some(left);
                }
            }
        }
    }

    /// An atom, with one subscript or range after it (`x[i]`, `x[a:b]`).
    fn subscript(&mut self) -> Option<RValue> {
        let atom = self.atom()?;
        let at = self.pos;
        if !self.try_tag("[") {
            return Some(atom);
        }
        let subscript = self
            .attempt(|c| {
                let from = c.attempt(Self::rvalue);
                c.tag(":")?;
                let to = c.attempt(Self::rvalue);
                Some(Subscript::Range(from, to))
            })
            .or_else(|| self.attempt(|c| c.rvalue().map(Subscript::Single)));
        match subscript {
            Some(subscript) if self.try_tag("]") => {
                Some(RValue::Subscript(Box::new(atom), Box::new(subscript)))
            }
            _ => {
                self.pos = at;
                Some(atom)
            }
        }
    }

    /// tract's alternatives in tract's order: invocation, literal, identifier, unary
    /// operator, parenthesis or tuple, comprehension, array.
    fn atom(&mut self) -> Option<RValue> {
        self.skip();
        let value = if let Some(invocation) = self.attempt(Self::invocation) {
            RValue::Invocation(invocation)
        } else if let Some(literal) = self.attempt(Self::literal) {
            RValue::Literal(literal)
        } else if let Some(id) = self.attempt(Self::identifier) {
            RValue::Identifier(id)
        } else if let Some(unary) = self.attempt(|c| {
            let op = c.rest().chars().next().filter(|ch| "+-!".contains(*ch))?;
            c.pos += 1;
            c.skip();
            Some(RValue::Unary(op.to_string(), Box::new(c.rvalue()?)))
        }) {
            unary
        } else if self.rest().starts_with('(') {
            self.pos += 1;
            let mut items = self.list(Self::rvalue);
            self.skip();
            self.rest().starts_with(')').then_some(())?;
            self.pos += 1;
            if items.len() == 1 {
                items.remove(0)
            } else {
                RValue::Tuple(items)
            }
        } else if let Some(comprehension) = self.attempt(Self::comprehension) {
            RValue::Comprehension(Box::new(comprehension))
        } else {
            self.rest().starts_with('[').then_some(())?;
            self.pos += 1;
            let items = self.list(Self::rvalue);
            self.skip();
            self.rest().starts_with(']').then_some(())?;
            self.pos += 1;
            RValue::Array(items)
        };
        self.skip();
        Some(value)
    }

    fn invocation(&mut self) -> Option<Invocation> {
        self.skip();
        let id = self.identifier()?;
        self.skip();
        let generic_type_name = self.attempt(|c| {
            c.tag("<")?;
            let name = c.type_name()?;
            c.tag(">")?;
            Some(name)
        });
        self.tag("(")?;
        let arguments = self.list(Self::argument);
        self.tag(")")?;
        Some(Invocation {
            id,
            generic_type_name,
            arguments,
        })
    }

    fn argument(&mut self) -> Option<Argument> {
        self.skip();
        let id = self.attempt(|c| {
            let id = c.identifier()?;
            c.tag("=")?;
            Some(id)
        });
        let rvalue = self.rvalue()?;
        self.skip();
        Some(Argument { id, rvalue })
    }

    fn comprehension(&mut self) -> Option<Comprehension> {
        self.tag("[")?;
        self.tag("for")?;
        let loop_iters = self.list(|c| {
            let id = c.identifier()?;
            c.tag("in")?;
            Some((id, c.rvalue()?))
        });
        self.tag("yield")?;
        let yields = self.rvalue()?;
        self.tag("]")?;
        Some(Comprehension {
            loop_iters,
            filter: None,
            yields,
        })
    }

    /// An escaped identifier (`i"gpu_0/data_0"`) or a plain one (`[A-Za-z_][A-Za-z0-9_]*`).
    fn identifier(&mut self) -> Option<Identifier> {
        if self.rest().starts_with("i\"") || self.rest().starts_with("i'") {
            self.pos += 1;
            return self.string().map(Identifier);
        }
        let bytes = self.rest().as_bytes();
        let first = *bytes.first()?;
        if !(first.is_ascii_alphabetic() || first == b'_') {
            return None;
        }
        let len = bytes
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .unwrap_or(bytes.len());
        let id = self.rest()[..len].to_string();
        self.pos += len;
        Some(Identifier(id))
    }

    fn literal(&mut self) -> Option<Literal> {
        self.skip();
        let literal = if let Some(number) = self.attempt(Self::numeric) {
            Literal::Numeric(number)
        } else if let Some(text) = self.attempt(Self::string) {
            Literal::String(text)
        } else if self.rest().starts_with("true") {
            self.pos += 4;
            Literal::Logical(true)
        } else if self.rest().starts_with("false") {
            self.pos += 5;
            Literal::Logical(false)
        } else {
            return None;
        };
        self.skip();
        Some(literal)
    }

    /// `-`? (digits | `inf`) (`.` digits?)? ([eE] [+-]? digits)?, as written.
    fn numeric(&mut self) -> Option<String> {
        self.skip();
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let mut at = start;
        if bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        let digits = |from: usize| {
            bytes[from.min(bytes.len())..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
        };
        match digits(at) {
            0 if self.text[at..].starts_with("inf") => at += 3,
            0 => return None,
            n => at += n,
        }
        if bytes.get(at) == Some(&b'.') {
            at += 1 + digits(at + 1);
        }
        if matches!(bytes.get(at), Some(b'e' | b'E')) {
            let mut exp = at + 1;
            if matches!(bytes.get(exp), Some(b'+' | b'-')) {
                exp += 1;
            }
            let n = digits(exp);
            if n > 0 {
                at = exp + n;
            }
        }
        self.pos = at;
        let number = self.text[start..at].to_string();
        self.skip();
        Some(number)
    }

    /// A quoted string (`"…"` or `'…'`); a backslash takes the next character as it is, and
    /// neither quote may appear unescaped inside (as tract's).
    fn string(&mut self) -> Option<String> {
        let mut chars = self.rest().char_indices();
        let (_, quote) = chars.next().filter(|(_, q)| *q == '"' || *q == '\'')?;
        let mut out = String::new();
        while let Some((i, ch)) = chars.next() {
            match ch {
                '\\' => out.push(chars.next()?.1),
                '"' | '\'' if ch == quote => {
                    self.pos += i + 1;
                    return Some(out);
                }
                '"' | '\'' => return None,
                _ => out.push(ch),
            }
        }
        None
    }
}
