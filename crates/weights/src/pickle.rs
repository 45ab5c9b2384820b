//! A minimal, safe reader for the pickles inside PyTorch `.pth` files.
//!
//! We write our own instead of using a general pickle crate because a state dict needs two torch-specific
//! hooks that general readers drop (persistent ids that name storages, and `torch._utils._rebuild_tensor_v2`
//! calls), and because nothing in a weights file should be able to name arbitrary callables: every global is
//! checked against a short allow-list and anything else is refused. Nothing is ever executed.
//!
//! Resources are bounded by the input, as PyTorch's `weights_only` unpickler intends: containers nest at
//! most [`MAX_DEPTH`] deep (so nothing recurses far on the values), the memo is sparse (a huge index costs
//! one entry), and the values that memo references copy are counted against a budget proportional to the
//! input ("billion laughs": a few hundred bytes that copy a list of lists level by level).

use std::collections::HashMap;
use std::fmt;

/// The deepest nesting of containers a pickle may build (a state dict nests a handful of levels).
pub const MAX_DEPTH: u32 = 64;

/// Values that memo references may copy, beyond the input's own length, counted in nodes.
const COPY_ALLOWANCE: usize = 1 << 20;

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// Any integer that fits 128 bits (the legacy magic number needs 77).
    Int(i128),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict (or `OrderedDict`), in insertion order.
    Dict(Vec<(Value, Value)>),
    /// An allow-listed global such as `torch.FloatStorage`.
    Global(String, String),
    /// A persistent id (in `.pth` files: which storage a tensor lives in).
    Persistent(Box<Value>),
    /// A tensor view rebuilt by `_rebuild_tensor_v2`: storage id, offset, sizes, strides.
    Tensor(TensorView),
}

/// Where a tensor's elements are: a view into a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorView {
    /// The persistent id of the storage (`('storage', type, key, location, numel)`).
    pub storage: Box<Value>,
    /// Offset into the storage, in elements.
    pub offset: usize,
    /// Sizes.
    pub size: Vec<usize>,
    /// Strides, in elements.
    pub stride: Vec<usize>,
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct PickleError(pub String);

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn err<T>(message: impl Into<String>) -> Result<T, PickleError> {
    Err(PickleError(message.into()))
}

const ALLOWED_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
];

/// Reads one pickle from `data` starting at `*pos`, leaving `*pos` just after its STOP opcode.
pub fn load(data: &[u8], pos: &mut usize) -> Result<Value, PickleError> {
    Machine {
        data,
        pos,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        copy_budget: data.len().saturating_add(COPY_ALLOWANCE),
    }
    .run()
}

/// A value on the stack or in the memo, with the depth of its nesting and its size in nodes.
#[derive(Clone)]
struct Entry {
    value: Value,
    depth: u32,
    nodes: usize,
}

impl Entry {
    /// A value that contains no other values.
    fn leaf(value: Value) -> Self {
        let nodes = match &value {
            Value::Str(s) => 1 + s.len() / 16,
            Value::Bytes(b) => 1 + b.len() / 16,
            _ => 1,
        };
        Self {
            value,
            depth: 0,
            nodes,
        }
    }

    /// `value` built from `parts`: one level deeper than the deepest part, and their nodes plus one.
    fn of(value: Value, parts: &[Entry]) -> Result<Self, PickleError> {
        let deepest = parts.iter().map(|p| p.depth).max().unwrap_or(0);
        let depth = deepest + 1;
        if depth > MAX_DEPTH {
            return err(format!("containers nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(Self {
            value,
            depth,
            nodes: 1 + parts.iter().map(|p| p.nodes).sum::<usize>(),
        })
    }

    /// Adds `parts` to this container (APPEND, SETITEM and their multi-item forms).
    fn absorb(&mut self, parts: &[Entry]) -> Result<(), PickleError> {
        let deepest = parts.iter().map(|p| p.depth + 1).max().unwrap_or(0);
        if deepest > MAX_DEPTH {
            return err(format!("containers nested deeper than {MAX_DEPTH} levels"));
        }
        self.depth = self.depth.max(deepest);
        self.nodes += parts.iter().map(|p| p.nodes).sum::<usize>();
        Ok(())
    }
}

struct Machine<'a, 'p> {
    data: &'a [u8],
    pos: &'p mut usize,
    stack: Vec<Entry>,
    marks: Vec<usize>,
    memo: HashMap<usize, Entry>,
    /// Nodes that memo references may still copy.
    copy_budget: usize,
}

impl Machine<'_, '_> {
    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        let start = *self.pos;
        let end = start.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                *self.pos = end;
                Ok(&self.data[start..end])
            }
            None => err(format!("truncated pickle at byte {start}")),
        }
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn le_u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[*self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return err("unterminated text line in pickle");
        };
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        *self.pos += end + 1;
        Ok(text)
    }

    fn text(&mut self, n: usize) -> Result<Value, PickleError> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map(Value::Str)
            .map_err(|_| PickleError("invalid UTF-8 string".into()))
    }

    fn push(&mut self, value: Value) {
        self.stack.push(Entry::leaf(value));
    }

    fn pop(&mut self) -> Result<Entry, PickleError> {
        self.stack
            .pop()
            .ok_or_else(|| PickleError("pickle stack underflow".into()))
    }

    fn pop_mark(&mut self) -> Result<Vec<Entry>, PickleError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| PickleError("pickle MARK missing".into()))?;
        if mark > self.stack.len() {
            return err("pickle MARK beyond the stack");
        }
        Ok(self.stack.split_off(mark))
    }

    /// Adds `parts` to the container on top of the stack, through `add`.
    fn extend_top(
        &mut self,
        parts: Vec<Entry>,
        add: impl FnOnce(&mut Value, Vec<Value>) -> Result<(), PickleError>,
    ) -> Result<(), PickleError> {
        let top = self
            .stack
            .last_mut()
            .ok_or_else(|| PickleError("pickle stack underflow".into()))?;
        top.absorb(&parts)?;
        add(&mut top.value, parts.into_iter().map(|p| p.value).collect())
    }

    /// Pushes the container `make` builds from `parts`.
    fn push_built(
        &mut self,
        parts: Vec<Entry>,
        make: impl FnOnce(Vec<Value>) -> Result<Value, PickleError>,
    ) -> Result<(), PickleError> {
        let shape = Entry::of(Value::None, &parts)?;
        let value = make(parts.into_iter().map(|p| p.value).collect())?;
        self.stack.push(Entry { value, ..shape });
        Ok(())
    }

    fn memo_put(&mut self, index: usize) -> Result<(), PickleError> {
        let entry = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| PickleError("memo of an empty stack".into()))?;
        self.memo.insert(index, entry);
        Ok(())
    }

    fn memo_get(&mut self, index: usize) -> Result<(), PickleError> {
        let entry = self
            .memo
            .get(&index)
            .ok_or_else(|| PickleError(format!("memo {index} unset")))?;
        // Each reference is a copy: count it, so that references to references cannot multiply.
        self.copy_budget = self.copy_budget.checked_sub(entry.nodes).ok_or_else(|| {
            PickleError("memo references copy more values than the pickle could hold".into())
        })?;
        let entry = entry.clone();
        self.stack.push(entry);
        Ok(())
    }

    fn global(module: String, name: String) -> Result<Value, PickleError> {
        if ALLOWED_GLOBALS
            .iter()
            .any(|(m, n)| *m == module && *n == name)
        {
            Ok(Value::Global(module, name))
        } else {
            err(format!(
                "refusing pickle global `{module}.{name}`: not part of a PyTorch state dict"
            ))
        }
    }

    fn reduce(callable: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Global(module, name) = &callable else {
            return err("REDUCE on a non-callable");
        };
        let Value::Tuple(args) = args else {
            return err("REDUCE arguments are not a tuple");
        };
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
            ("torch._utils", "_rebuild_parameter") => args
                .into_iter()
                .next()
                .ok_or_else(|| PickleError("empty parameter".into())),
            ("torch._utils", "_rebuild_tensor_v2") => {
                let [storage, offset, size, stride, ..] = args.as_slice() else {
                    return err("short _rebuild_tensor_v2 call");
                };
                let ints = |v: &Value| -> Result<Vec<usize>, PickleError> {
                    match v {
                        Value::Tuple(items) | Value::List(items) => {
                            items.iter().map(as_usize).collect()
                        }
                        _ => err("tensor sizes/strides are not a tuple"),
                    }
                };
                let Value::Persistent(storage) = storage else {
                    return err("tensor storage is not a persistent id");
                };
                Ok(Value::Tensor(TensorView {
                    storage: storage.clone(),
                    offset: as_usize(offset)?,
                    size: ints(size)?,
                    stride: ints(stride)?,
                }))
            }
            _ => err(format!("cannot call `{module}.{name}`")),
        }
    }

    /// REDUCE and NEWOBJ: `callable(*args)` for the allow-listed callables.
    fn call(&mut self) -> Result<(), PickleError> {
        let (args, callable) = (self.pop()?, self.pop()?);
        let parts = [callable, args];
        let shape = Entry::of(Value::None, &parts)?;
        let [callable, args] = parts;
        let value = Self::reduce(callable.value, args.value)?;
        self.stack.push(Entry { value, ..shape });
        Ok(())
    }

    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'.' => return Ok(self.pop()?.value),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.push(Value::Dict(Vec::new())),
                b']' => self.push(Value::List(Vec::new())),
                b')' => self.push(Value::Tuple(Vec::new())),
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                    self.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
                    self.push(Value::Int(v.into()));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    if n > 16 {
                        return err("integer wider than 128 bits");
                    }
                    let bytes = self.take(n)?;
                    let mut v: i128 = 0;
                    for (i, b) in bytes.iter().enumerate() {
                        v |= i128::from(*b) << (8 * i);
                    }
                    if n > 0 && n < 16 && bytes[n - 1] & 0x80 != 0 {
                        v -= 1i128 << (8 * n);
                    }
                    self.push(Value::Int(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                    self.push(Value::Float(v));
                }
                b'X' | b'T' => {
                    let n = self.le_u32()? as usize;
                    let v = self.text(n)?;
                    self.push(v);
                }
                0x8c | b'U' => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    self.push(v);
                }
                b'B' => {
                    let n = self.le_u32()? as usize;
                    let v = self.take(n)?.to_vec();
                    self.push(Value::Bytes(v));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let v = self.take(n)?.to_vec();
                    self.push(Value::Bytes(v));
                }
                b'q' => {
                    let i = self.u8()? as usize;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.le_u32()? as usize;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len();
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as usize;
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.le_u32()? as usize;
                    self.memo_get(i)?;
                }
                b'c' => {
                    let (module, name) = (self.line()?, self.line()?);
                    let global = Self::global(module, name)?;
                    self.push(global);
                }
                0x93 => {
                    let (name, module) = (self.pop()?.value, self.pop()?.value);
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return err("STACK_GLOBAL needs strings");
                    };
                    let global = Self::global(module, name)?;
                    self.push(global);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_built(items, |v| Ok(Value::Tuple(v)))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return err("pickle stack underflow in TUPLE");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_built(items, |v| Ok(Value::Tuple(v)))?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_built(items, |v| Ok(Value::List(v)))?;
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push_built(items, |v| Ok(Value::Dict(pairs(v)?)))?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top(vec![v], into_list("APPEND"))?;
                }
                b'e' => {
                    let v = self.pop_mark()?;
                    self.extend_top(v, into_list("APPENDS"))?;
                }
                b's' => {
                    let (v, k) = (self.pop()?, self.pop()?);
                    self.extend_top(vec![k, v], into_dict("SETITEM"))?;
                }
                b'u' => {
                    let new = self.pop_mark()?;
                    self.extend_top(new, into_dict("SETITEMS"))?;
                }
                b'R' | 0x81 => self.call()?,
                b'0' => {
                    self.pop()?; // POP
                }
                b'b' => {
                    self.pop()?; // BUILD: object state (e.g. a state dict's `_metadata`) is not needed.
                }
                b'Q' => {
                    let id = self.pop()?;
                    self.push_built(vec![id], |mut v| {
                        Ok(Value::Persistent(Box::new(v.remove(0))))
                    })?;
                }
                other => {
                    return err(format!(
                        "unsupported pickle opcode 0x{other:02x} at byte {}",
                        *self.pos - 1
                    ))
                }
            }
        }
    }
}

/// Appends values to the list on top of the stack (`op` names the opcode in the error).
fn into_list(op: &'static str) -> impl FnOnce(&mut Value, Vec<Value>) -> Result<(), PickleError> {
    move |top, values| match top {
        Value::List(items) => {
            items.extend(values);
            Ok(())
        }
        _ => err(format!("{op} to a non-list")),
    }
}

/// Adds key-value pairs to the dict on top of the stack (`op` names the opcode in the error).
fn into_dict(op: &'static str) -> impl FnOnce(&mut Value, Vec<Value>) -> Result<(), PickleError> {
    move |top, values| match top {
        Value::Dict(items) => {
            items.extend(pairs(values)?);
            Ok(())
        }
        _ => err(format!("{op} on a non-dict")),
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, PickleError> {
    if !items.len().is_multiple_of(2) {
        return err("odd number of dict items");
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// An integer value as `usize`.
pub fn as_usize(v: &Value) -> Result<usize, PickleError> {
    match v {
        Value::Int(i) => {
            usize::try_from(*i).map_err(|_| PickleError(format!("{i} is not a valid size")))
        }
        other => err(format!("expected an integer, found {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_protocol_2_containers() {
        // pickle.dumps({'a': [1, 2.5, None], 'b': (True, 'x')}, protocol=2) from CPython 3.11.
        let bytes = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00NeX\x01\x00\x00\x00bq\x03\x88X\x01\x00\x00\x00xq\x04\x86q\x05u.";
        let mut pos = 0;
        let v = load(bytes, &mut pos).unwrap();
        assert_eq!(pos, bytes.len());
        let Value::Dict(items) = v else {
            panic!("not a dict")
        };
        assert_eq!(items[0].0, Value::Str("a".into()));
        let Value::List(list) = &items[0].1 else {
            panic!("not a list")
        };
        assert_eq!(list, &[Value::Int(1), Value::Float(2.5), Value::None]);
        assert_eq!(
            items[1].1,
            Value::Tuple(vec![Value::Bool(true), Value::Str("x".into())])
        );
    }

    #[test]
    fn refuses_globals_outside_the_allow_list() {
        let bytes = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
        let e = load(bytes, &mut 0).unwrap_err();
        assert!(e.0.contains("os.system"), "{e}");
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(load(b"\x80\x02}q\x00(X\x01\x00", &mut 0)
            .unwrap_err()
            .0
            .contains("truncated"));
    }

    #[test]
    fn long1_reads_the_legacy_magic_number() {
        // pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)
        let bytes = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
        assert_eq!(
            load(bytes, &mut 0).unwrap(),
            Value::Int(0x1950a86a20f9469cfc6c)
        );
    }

    /// A "billion laughs" pickle: level `i + 1` is a list of ten references to level `i`, `levels` deep.
    pub(crate) fn laughs(levels: u8) -> Vec<u8> {
        let mut p = b"\x80\x02]q\x00".to_vec();
        for level in 0..levels {
            p.push(b'(');
            for _ in 0..10 {
                p.extend([b'h', level]);
            }
            p.extend([b'l', b'q', level + 1]);
        }
        p.push(b'.');
        p
    }

    #[test]
    fn memo_references_cannot_multiply_a_small_pickle_into_a_large_value() {
        let p = laughs(9); // 10^9 empty lists if every reference were copied out
        assert!(p.len() < 300);
        let e = load(&p, &mut 0).unwrap_err();
        assert!(e.0.contains("memo references copy more"), "{e}");
        // A few levels are fine: the budget only stops what the input cannot justify.
        assert!(load(&laughs(3), &mut 0).is_ok());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // 2 MB of nested lists: `]` a million times, then APPEND them into each other.
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b']', 1_000_000));
        p.extend(std::iter::repeat_n(b'a', 999_999));
        p.push(b'.');
        let e = load(&p, &mut 0).unwrap_err();
        assert!(e.0.contains("nested deeper than 64"), "{e}");
        // The same through MARK and LIST.
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b'(', 100_000));
        p.extend(std::iter::repeat_n(b'l', 100_000));
        p.push(b'.');
        assert!(load(&p, &mut 0).unwrap_err().0.contains("nested deeper"));
    }

    #[test]
    fn a_huge_memo_index_costs_one_entry() {
        // LONG_BINPUT 2^31 - 1, then LONG_BINGET of it.
        let p = b"\x80\x02]r\xff\xff\xff\x7f0j\xff\xff\xff\x7f.";
        assert_eq!(load(p, &mut 0).unwrap(), Value::List(Vec::new()));
    }
}
