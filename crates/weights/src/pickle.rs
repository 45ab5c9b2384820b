//! A minimal, safe reader for the pickles inside PyTorch `.pth` files.
//!
//! We write our own instead of using a general pickle crate because a state dict needs two torch-specific
//! hooks that general readers drop (persistent ids that name storages, and `torch._utils._rebuild_tensor_v2`
//! calls), and because nothing in a weights file should be able to name arbitrary callables: every global is
//! checked against a short allow-list and anything else is refused. Nothing is ever executed.

use std::fmt;

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
        memo: Vec::new(),
    }
    .run()
}

struct Machine<'a, 'p> {
    data: &'a [u8],
    pos: &'p mut usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Vec<Option<Value>>,
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

    fn pop(&mut self) -> Result<Value, PickleError> {
        self.stack
            .pop()
            .ok_or_else(|| PickleError("pickle stack underflow".into()))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| PickleError("pickle MARK missing".into()))?;
        if mark > self.stack.len() {
            return err("pickle MARK beyond the stack");
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self) -> Result<&mut Value, PickleError> {
        self.stack
            .last_mut()
            .ok_or_else(|| PickleError("pickle stack underflow".into()))
    }

    fn memo_put(&mut self, index: usize) -> Result<(), PickleError> {
        let value = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| PickleError("memo of an empty stack".into()))?;
        if index > 1 << 24 {
            return err("memo index too large");
        }
        if self.memo.len() <= index {
            self.memo.resize(index + 1, None);
        }
        self.memo[index] = Some(value);
        Ok(())
    }

    fn memo_get(&mut self, index: usize) -> Result<(), PickleError> {
        let value = self
            .memo
            .get(index)
            .cloned()
            .flatten()
            .ok_or_else(|| PickleError(format!("memo {index} unset")))?;
        self.stack.push(value);
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
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                    self.stack.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
                    self.stack.push(Value::Int(v.into()));
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
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.le_u32()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'T' => {
                    let n = self.le_u32()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'B' => {
                    let n = self.le_u32()? as usize;
                    let v = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(v));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let v = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(v));
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
                    self.stack.push(Self::global(module, name)?);
                }
                0x93 => {
                    let (name, module) = (self.pop()?, self.pop()?);
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return err("STACK_GLOBAL needs strings");
                    };
                    self.stack.push(Self::global(module, name)?);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return err("pickle stack underflow in TUPLE");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(pairs(items)?));
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(items) => items.push(v),
                        _ => return err("APPEND to a non-list"),
                    }
                }
                b'e' => {
                    let v = self.pop_mark()?;
                    match self.top()? {
                        Value::List(items) => items.extend(v),
                        _ => return err("APPENDS to a non-list"),
                    }
                }
                b's' => {
                    let (v, k) = (self.pop()?, self.pop()?);
                    match self.top()? {
                        Value::Dict(items) => items.push((k, v)),
                        _ => return err("SETITEM on a non-dict"),
                    }
                }
                b'u' => {
                    let new = pairs(self.pop_mark()?)?;
                    match self.top()? {
                        Value::Dict(items) => items.extend(new),
                        _ => return err("SETITEMS on a non-dict"),
                    }
                }
                b'R' => {
                    let (args, callable) = (self.pop()?, self.pop()?);
                    self.stack.push(Self::reduce(callable, args)?);
                }
                0x81 => {
                    let (args, class) = (self.pop()?, self.pop()?);
                    self.stack.push(Self::reduce(class, args)?);
                }
                b'b' => {
                    self.pop()?; // BUILD: object state (e.g. a state dict's `_metadata`) is not needed.
                }
                b'Q' => {
                    let id = self.pop()?;
                    self.stack.push(Value::Persistent(Box::new(id)));
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
}
