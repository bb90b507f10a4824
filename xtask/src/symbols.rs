//! Reading keel's ELF: function symbols (to resolve addresses from crash dumps) and the size of
//! what the boot loader loads (the sum of the PT_LOAD segments' `p_memsz`).

use anyhow::{Context, Result};
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

/// A function symbol.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Symbol {
    /// Start address.
    pub address: u64,
    /// Size in bytes (0 if the ELF does not say).
    pub size: u64,
    /// Demangled name without the hash suffix.
    pub name: String,
}

impl Symbol {
    fn contains(&self, address: u64) -> bool {
        address >= self.address && address - self.address < self.size
    }
}

/// Function symbols sorted by address, for address-to-name lookups.
#[derive(Clone, Debug, Default)]
pub struct SymbolTable {
    symbols: Vec<Symbol>,
}

/// Demangles a Rust symbol name (legacy or v0), dropping the hash; other names are kept.
pub fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

impl SymbolTable {
    /// A table of the given symbols.
    pub fn new(mut symbols: Vec<Symbol>) -> Self {
        symbols.sort_by_key(|s| (s.address, std::cmp::Reverse(s.size)));
        Self { symbols }
    }

    /// The function symbols of an ELF image.
    pub fn from_elf(image: &[u8]) -> Result<Self> {
        let file = object::File::parse(image).context("not a readable ELF file")?;
        let symbols = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.is_definition())
            .filter_map(|s| Some(Symbol { address: s.address(), size: s.size(), name: demangle(s.name().ok()?) }))
            .collect();
        Ok(Self::new(symbols))
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// The function containing `address`: the innermost sized symbol that covers it, else the
    /// nearest preceding symbol without a size.
    pub fn lookup(&self, address: u64) -> Option<&Symbol> {
        // Symbols starting at or before `address`.
        let candidates = &self.symbols[..self.symbols.partition_point(|s| s.address <= address)];
        candidates
            .iter()
            .filter(|s| s.contains(address))
            .min_by_key(|s| s.size)
            .or_else(|| candidates.iter().rev().find(|s| s.size == 0))
    }
}

/// Sum of `p_memsz` over the PT_LOAD segments of an ELF image.
pub fn loaded_size(image: &[u8]) -> Result<u64> {
    let file = object::File::parse(image).context("not a readable ELF file")?;
    // `segments()` yields exactly the PT_LOAD program headers; `size()` is their p_memsz.
    Ok(file.segments().map(|s| s.size()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(address: u64, size: u64, name: &str) -> Symbol {
        Symbol { address, size, name: name.into() }
    }

    #[test]
    fn lookup_finds_the_covering_function() {
        let t = SymbolTable::new(vec![sym(0x2000, 0x100, "b"), sym(0x1000, 0x80, "a"), sym(0x3000, 0, "c_unsized")]);
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup(0x1000).unwrap().name, "a");
        assert_eq!(t.lookup(0x107f).unwrap().name, "a");
        assert_eq!(t.lookup(0x20ff).unwrap().name, "b");
        // Between sized functions with no unsized symbol before: nothing.
        assert!(t.lookup(0x1080).is_none());
        assert!(t.lookup(0x0fff).is_none());
        // Past an unsized symbol: that one.
        assert_eq!(t.lookup(0x3500).unwrap().name, "c_unsized");
        assert!(SymbolTable::default().lookup(0).is_none());
    }

    #[test]
    fn lookup_prefers_the_innermost_symbol() {
        let t = SymbolTable::new(vec![sym(0x1000, 0x1000, "outer"), sym(0x1800, 0x10, "inner")]);
        assert_eq!(t.lookup(0x1808).unwrap().name, "inner");
        assert_eq!(t.lookup(0x1810).unwrap().name, "outer");
    }

    #[test]
    fn lookup_at_the_top_of_the_address_space() {
        let t = SymbolTable::new(vec![sym(u64::MAX - 0xf, 0x10, "top")]);
        assert_eq!(t.lookup(u64::MAX).unwrap().name, "top");
    }

    #[test]
    fn rust_names_are_demangled_without_hash() {
        assert_eq!(
            demangle("_ZN4keel5tests18provoke_page_fault17h0123456789abcdefE"),
            "keel::tests::provoke_page_fault"
        );
        assert_eq!(demangle("memcpy"), "memcpy");
    }

    #[test]
    fn reads_symbols_of_a_real_elf() {
        // This test binary is an ELF with symbols for its own functions.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let t = SymbolTable::from_elf(&me).unwrap();
        let found = t
            .symbols
            .iter()
            .find(|s| s.name.ends_with("symbols::tests::reads_symbols_of_a_real_elf"))
            .expect("own test function among the symbols");
        assert!(found.size > 0);
        assert_eq!(t.lookup(found.address + found.size / 2), Some(found));
    }

    /// A minimal little-endian ELF64 header followed by the given program headers.
    fn elf_with_segments(segments: &[(u32, u64)]) -> Vec<u8> {
        let phoff = 64u64;
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little endian
        f[6] = 1; // EV_CURRENT
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[32..40].copy_from_slice(&phoff.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        f[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        for &(p_type, memsz) in segments {
            let mut ph = [0u8; 56];
            ph[..4].copy_from_slice(&p_type.to_le_bytes());
            ph[40..48].copy_from_slice(&memsz.to_le_bytes()); // p_memsz
            f.extend_from_slice(&ph);
        }
        f
    }

    #[test]
    fn loaded_size_sums_only_pt_load() {
        const PT_LOAD: u32 = 1;
        const PT_NOTE: u32 = 4;
        let elf = elf_with_segments(&[(PT_LOAD, 0x1000), (PT_NOTE, 0x77), (PT_LOAD, 0x2345)]);
        assert_eq!(loaded_size(&elf).unwrap(), 0x3345);
        assert_eq!(loaded_size(&elf_with_segments(&[])).unwrap(), 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(loaded_size(b"not an elf").is_err());
        assert!(SymbolTable::from_elf(&[0x7f, b'E', b'L', b'F', 2, 1]).is_err());
    }
}
