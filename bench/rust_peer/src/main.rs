//! `st_validate PATH`: open a .safetensors file the way the reference Rust crate does a full,
//! validating open (`SafeTensors::deserialize`: header length, UTF-8, JSON, dtypes, shapes,
//! contiguous in-bounds offsets, the buffer's exact length), print its number of tensors and
//! exit. Status 0 when the file is valid, 1 when it is not, 2 on a usage error.
use std::fs::File;
use std::process::ExitCode;

use safetensors::SafeTensors;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: st_validate PATH");
        return ExitCode::from(2);
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(err) => {
            eprintln!("st_validate: {}: {err}", path.to_string_lossy());
            return ExitCode::from(1);
        }
    };
    // Map the file as the reference Python binding's safe_open does. An empty file cannot be
    // mapped; it is read instead (and then rejected by the crate as too small).
    // SAFETY: the file is only read, and this process does not outlive the mapping's use.
    let mapped = unsafe { memmap2::Mmap::map(&file) };
    let owned;
    let buffer: &[u8] = match &mapped {
        Ok(map) => map,
        Err(_) => {
            owned = std::fs::read(&path).unwrap_or_default();
            &owned
        }
    };
    match SafeTensors::deserialize(buffer) {
        Ok(tensors) => {
            println!("{}", tensors.len());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("st_validate: {}: {err}", path.to_string_lossy());
            ExitCode::from(1)
        }
    }
}
