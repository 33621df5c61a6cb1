// A model of how the reference `safetensors` crate opens a file, written from its documented
// data model: serde_json into a map of name -> {dtype, shape, data_offsets} with the metadata
// under "__metadata__" (a flattened map), then a vector sorted by offsets, a name index and
// the offset/size validation. Used only to put our open time next to a comparable baseline.
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Instant;

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
enum Dtype { BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64, C64 }

impl Dtype {
    fn bits(self) -> usize {
        match self {
            Dtype::F4 => 4, Dtype::F6_E2M3 | Dtype::F6_E3M2 => 6,
            Dtype::BOOL | Dtype::U8 | Dtype::I8 | Dtype::F8_E5M2 | Dtype::F8_E4M3 | Dtype::F8_E8M0 => 8,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 16,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 32,
            Dtype::F64 | Dtype::I64 | Dtype::U64 | Dtype::C64 => 64,
        }
    }
}

#[derive(Debug, Deserialize)]
struct TensorInfo { dtype: Dtype, shape: Vec<usize>, data_offsets: (usize, usize) }

#[derive(Deserialize)]
struct HashMetadata {
    #[serde(rename = "__metadata__")]
    metadata: Option<HashMap<String, String>>,
    #[serde(flatten)]
    tensors: HashMap<String, TensorInfo>,
}

struct Metadata {
    _metadata: Option<HashMap<String, String>>,
    tensors: Vec<TensorInfo>,
    index_map: HashMap<String, usize>,
}

fn open(buffer: &[u8]) -> Result<Metadata, String> {
    let n = u64::from_le_bytes(buffer[..8].try_into().unwrap()) as usize;
    let text = std::str::from_utf8(&buffer[8..8 + n]).map_err(|e| e.to_string())?;
    let parsed: HashMetadata = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut entries: Vec<(String, TensorInfo)> = parsed.tensors.into_iter().collect();
    entries.sort_by(|a, b| a.1.data_offsets.cmp(&b.1.data_offsets));
    let mut index_map = HashMap::with_capacity(entries.len());
    let mut tensors = Vec::with_capacity(entries.len());
    for (i, (name, info)) in entries.into_iter().enumerate() {
        index_map.insert(name, i);
        tensors.push(info);
    }
    let mut start = 0;
    for info in &tensors {
        let (s, e) = info.data_offsets;
        if s != start || e < s { return Err("invalid offset".into()); }
        start = e;
        let elements = info.shape.iter().try_fold(1usize, |acc, &x| acc.checked_mul(x)).ok_or("overflow")?;
        let bits = elements.checked_mul(info.dtype.bits()).ok_or("overflow")?;
        if bits % 8 != 0 || bits / 8 != e - s { return Err("size mismatch".into()); }
    }
    if start + 8 + n != buffer.len() { return Err("buffer end".into()); }
    Ok(Metadata { _metadata: parsed.metadata, tensors, index_map })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let repeat: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(9);
    let mut times = Vec::new();
    for _ in 0..repeat {
        let start = Instant::now();
        // Like the reference: the header is read from the file at each open.
        let file = std::fs::read(&args[1]).unwrap();
        let metadata = open(&file).unwrap();
        std::hint::black_box((&metadata.tensors, &metadata.index_map));
        drop(metadata);
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{:.6} {:.6}", times[0], times[times.len() / 2]);
    // A lower bound for any serde_json-based open: parsing into a generic value only.
    let mut floor = Vec::new();
    for _ in 0..repeat {
        let start = Instant::now();
        let file = std::fs::read(&args[1]).unwrap();
        let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        let v: serde_json::Value = serde_json::from_slice(&file[8..8 + n]).unwrap();
        std::hint::black_box(&v);
        drop(v);
        floor.push(start.elapsed().as_secs_f64());
    }
    floor.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("value-only {:.6} {:.6}", floor[0], floor[floor.len() / 2]);
}
