//! An operator's parameters as the optimized payload carries them ([`Record`]): two flat
//! streams, floats and integers, every vector and text length-prefixed in the integers, read
//! back in the order written ([`Reader`]), each length checked against what is left; and the
//! trait of an operator with such a form ([`NnefForm`]). The NNEF primitive that carries a
//! record is [`super::nnef_form`]'s.

use tract_nnef::internal::*;

use super::{Labels, Post};

/// An operator's parameters as two flat streams (see the module doc).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Record {
    floats: Vec<f32>,
    ints: Vec<i64>,
}

impl Record {
    /// A record from its two streams (as read from a payload).
    pub fn from_streams(floats: Vec<f32>, ints: Vec<i64>) -> Record {
        Record { floats, ints }
    }

    /// Its two streams (to write to a payload).
    pub fn streams(&self) -> (&[f32], &[i64]) {
        (&self.floats, &self.ints)
    }

    /// Appends a float vector.
    pub fn floats(&mut self, v: &[f32]) {
        self.ints.push(v.len() as i64);
        self.floats.extend_from_slice(v);
    }

    /// Appends one float.
    pub fn float(&mut self, v: f32) {
        self.floats(&[v]);
    }

    /// Appends an integer vector.
    pub fn ints(&mut self, v: &[i64]) {
        self.ints.push(v.len() as i64);
        self.ints.extend_from_slice(v);
    }

    /// Appends one integer.
    pub fn int(&mut self, v: i64) {
        self.ints(&[v]);
    }

    /// Appends a text.
    pub fn text(&mut self, s: &str) {
        let bytes: Vec<i64> = s.bytes().map(i64::from).collect();
        self.ints(&bytes);
    }

    /// Appends class labels (integers, or names).
    pub fn labels(&mut self, labels: &Labels) {
        match labels {
            Labels::Ints(v) => {
                self.int(0);
                self.ints(v);
            }
            Labels::Strings(v) => {
                self.int(1);
                self.int(v.len() as i64);
                v.iter().for_each(|s| self.text(s));
            }
        }
    }

    /// Reads the record back, for an operator `kind` (named in errors).
    pub fn reader(&self, kind: &str) -> Reader<'_> {
        Reader {
            kind: kind.to_string(),
            record: self,
            at_float: 0,
            at_int: 0,
        }
    }
}

/// Reads a [`Record`] in the order it was written.
pub struct Reader<'r> {
    kind: String,
    record: &'r Record,
    at_float: usize,
    at_int: usize,
}

impl Reader<'_> {
    /// The next length prefix, checked against `left` values.
    fn length(&mut self, what: &str, left: usize) -> TractResult<usize> {
        let n = *self
            .record
            .ints
            .get(self.at_int)
            .with_context(|| format!("{}: the record ends before {what}", self.kind))?;
        self.at_int += 1;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .with_context(|| format!("{}: {what} claims {n} values, {left} left", self.kind))
    }

    /// The next float vector.
    pub fn floats(&mut self, what: &str) -> TractResult<Vec<f32>> {
        let left = self.record.floats.len() - self.at_float;
        let n = self.length(what, left)?;
        let v = self.record.floats[self.at_float..][..n].to_vec();
        self.at_float += n;
        Ok(v)
    }

    /// The next float vector, which must hold one value.
    pub fn float(&mut self, what: &str) -> TractResult<f32> {
        match self.floats(what)?[..] {
            [v] => Ok(v),
            ref other => bail!("{}: {what} has {} values, not 1", self.kind, other.len()),
        }
    }

    /// The next integer vector.
    pub fn ints(&mut self, what: &str) -> TractResult<Vec<i64>> {
        let left = self.record.ints.len().saturating_sub(self.at_int + 1);
        let n = self.length(what, left)?;
        let v = self.record.ints[self.at_int..][..n].to_vec();
        self.at_int += n;
        Ok(v)
    }

    /// The next integer vector, which must hold one value.
    pub fn int(&mut self, what: &str) -> TractResult<i64> {
        match self.ints(what)?[..] {
            [v] => Ok(v),
            ref other => bail!("{}: {what} has {} values, not 1", self.kind, other.len()),
        }
    }

    /// The next integer vector as counts or indices.
    pub fn sizes(&mut self, what: &str) -> TractResult<Vec<usize>> {
        let kind = self.kind.clone();
        self.ints(what)?
            .into_iter()
            .map(|v| usize::try_from(v).map_err(|_| format_err!("{kind}: {what} holds {v}")))
            .collect()
    }

    /// The next text.
    pub fn text(&mut self, what: &str) -> TractResult<String> {
        let bytes = self
            .ints(what)?
            .into_iter()
            .map(|b| u8::try_from(b).map_err(|_| format_err!("{}: {what}", self.kind)))
            .collect::<TractResult<Vec<u8>>>()?;
        String::from_utf8(bytes).with_context(|| format!("{}: {what} is not UTF-8", self.kind))
    }

    /// The next class labels.
    pub fn labels(&mut self) -> TractResult<Labels> {
        Ok(match self.int("the label kind")? {
            0 => Labels::Ints(self.ints("the labels")?),
            1 => {
                let n = self.int("the label count")?;
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                ensure!(
                    n <= self.record.ints.len(),
                    "{}: {n} label names",
                    self.kind
                );
                Labels::Strings(
                    (0..n)
                        .map(|_| self.text("a label name"))
                        .collect::<TractResult<_>>()?,
                )
            }
            k => bail!("{}: label kind {k}", self.kind),
        })
    }

    /// The next post-transform.
    pub fn post(&mut self) -> TractResult<Post> {
        Post::parse(&self.text("the post-transform")?)
    }

    /// Fails unless every value was read.
    pub fn finish(self) -> TractResult<()> {
        ensure!(
            self.at_float == self.record.floats.len() && self.at_int == self.record.ints.len(),
            "{}: {} floats and {} integers left over in the record (a payload from a newer \
             edgefleet? update the agent)",
            self.kind,
            self.record.floats.len() - self.at_float,
            self.record.ints.len() - self.at_int
        );
        Ok(())
    }
}

/// An operator with an NNEF form: its parameters as a [`Record`], and back.
pub trait NnefForm: Sized {
    /// The operator's name in the payload.
    const KIND: &'static str;
    /// Writes its parameters.
    fn write(&self, record: &mut Record);
    /// Builds it from its parameters, validating them as the ONNX parser does.
    fn read(reader: &mut Reader) -> TractResult<Self>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_what_was_written_and_rejects_what_was_not() {
        let mut r = Record::default();
        r.floats(&[1.0, f32::NAN]);
        r.int(7);
        r.text("chat noir \"é\"");
        r.labels(&Labels::Strings(vec!["a".into(), "b\n".into()]));
        let mut read = r.reader("Test");
        let f = read.floats("f").unwrap();
        assert_eq!(f[0], 1.0);
        assert!(f[1].is_nan());
        assert_eq!(read.int("i").unwrap(), 7);
        assert_eq!(read.text("t").unwrap(), "chat noir \"é\"");
        assert_eq!(
            read.labels().unwrap(),
            Labels::Strings(vec!["a".into(), "b\n".into()])
        );
        read.finish().unwrap();

        // a record cut short, or with a lying length, is an error, not a panic
        let mut short = r.clone();
        short.ints.truncate(5);
        let mut read = short.reader("Test");
        read.floats("f").unwrap();
        read.int("i").unwrap();
        let e = read.text("t").unwrap_err().to_string();
        assert!(e.contains("Test: t claims"), "{e}");
        let lying = Record {
            floats: vec![1.0],
            ints: vec![5],
        };
        let e = lying.reader("Test").floats("f").unwrap_err().to_string();
        assert!(e.contains("claims 5 values, 1 left"), "{e}");
        // left-over values are an error
        let mut r = Record::default();
        r.int(1);
        r.int(2);
        let mut read = r.reader("Test");
        read.int("i").unwrap();
        assert!(read.finish().is_err());
    }
}
