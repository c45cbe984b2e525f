//! `--stacks`: the user stacks the kernel captured, turned into frame text with blazesym.
//!
//! A stack is symbolized as soon as its event reaches the writer, while the process most
//! likely still runs: blazesym reads the process's `/proc/<pid>/maps` and the ELF/DWARF of
//! each mapped object. Frames read `function (file:line)` (or `function` without line
//! information); an address no symbol covers reads `object+0xfileoffset`; when the process is
//! gone nothing but `0xaddress` is left.
//!
//! Mapped objects are opened by the paths in `/proc/<pid>/maps`, seen from the recorder's mount
//! namespace, rather than through `/proc/<pid>/map_files/`: the writer runs with
//! CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH only, and `map_files` needs CAP_SYS_ADMIN (or
//! CAP_CHECKPOINT_RESTORE). A process in another mount namespace may therefore only get
//! `object+0xoffset` frames.

use std::collections::HashMap;
use std::sync::Arc;

use blazesym::Pid;
use blazesym::normalize::{NormalizeOpts, Normalizer, UserMeta};
use blazesym::symbolize::source::{Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};

/// Distinct stacks remembered (per process, until it exits) before the memory is cleared.
const MAX_CACHED: usize = 16 * 1024;

pub struct StackSymbolizer {
    symbolizer: Symbolizer,
    normalizer: Normalizer,
    /// Per process: stacks already symbolized (a program sends its queries from few places).
    cache: HashMap<u32, HashMap<Vec<u64>, Arc<[String]>>>,
    cached: usize,
    /// Stacks symbolized (not taken from the cache) and of those, ones whose process was gone.
    pub symbolized: u64,
    pub process_gone: u64,
}

impl Default for StackSymbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl StackSymbolizer {
    pub fn new() -> Self {
        Self {
            symbolizer: Symbolizer::new(),
            normalizer: Normalizer::new(),
            cache: HashMap::new(),
            cached: 0,
            symbolized: 0,
            process_gone: 0,
        }
    }

    /// Frame text for the return addresses `ips` (innermost first) of process `pid`.
    pub fn symbolize(&mut self, pid: u32, ips: &[u64]) -> Arc<[String]> {
        if let Some(hit) = self.cache.get(&pid).and_then(|m| m.get(ips)) {
            return Arc::clone(hit);
        }
        let frames: Arc<[String]> = Arc::from(self.symbolize_uncached(pid, ips));
        if self.cached >= MAX_CACHED {
            self.cache.clear();
            self.cached = 0;
        }
        self.cache
            .entry(pid)
            .or_default()
            .insert(ips.to_vec(), Arc::clone(&frames));
        self.cached += 1;
        frames
    }

    /// Forgets what was cached for a process that exited (its pid may be reused).
    pub fn forget(&mut self, pid: u32) {
        if let Some(m) = self.cache.remove(&pid) {
            self.cached = self.cached.saturating_sub(m.len());
        }
    }

    fn symbolize_uncached(&mut self, pid: u32, ips: &[u64]) -> Vec<String> {
        self.symbolized += 1;
        let hex = |a: u64| format!("{a:#x}");
        if pid == 0 {
            // blazesym reads pid 0 as "this process".
            return ips.iter().map(|&a| hex(a)).collect();
        }
        // Every frame but the innermost is a return address: the call is the instruction
        // before it, and the return address may already be in the next line or function
        // (after a call to a noreturn function). The usual unwinder convention.
        let lookup: Vec<u64> = ips
            .iter()
            .enumerate()
            .map(|(i, &a)| if i == 0 { a } else { a.saturating_sub(1) })
            .collect();
        let mut process = Process::new(Pid::from(pid));
        process.map_files = false;
        process.perf_map = false;
        let src = Source::Process(process);
        let syms = match self.symbolizer.symbolize(&src, Input::AbsAddr(&lookup)) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(pid, "cannot symbolize a stack: {e}");
                self.process_gone += 1;
                return ips.iter().map(|&a| hex(a)).collect();
            }
        };
        let mut frames: Vec<Option<String>> = syms
            .iter()
            .map(|s| match s {
                Symbolized::Sym(sym) => Some(match &sym.code_info {
                    Some(ci) => match ci.line {
                        Some(line) => format!("{} ({}:{line})", sym.name, ci.to_path().display()),
                        None => format!("{} ({})", sym.name, ci.to_path().display()),
                    },
                    None => sym.name.to_string(),
                }),
                Symbolized::Unknown(_) => None,
            })
            .collect();
        frames.resize(ips.len(), None);
        // Addresses no symbol covers (stripped objects, JIT code): object and file offset.
        let unknown: Vec<u64> = frames
            .iter()
            .zip(&lookup)
            .filter(|(f, _)| f.is_none())
            .map(|(_, &a)| a)
            .collect();
        let mut objects = Vec::new();
        if !unknown.is_empty() {
            let opts = NormalizeOpts {
                map_files: false,
                ..Default::default()
            };
            if let Ok(out) =
                self.normalizer
                    .normalize_user_addrs_opts(Pid::from(pid), &unknown, &opts)
            {
                objects = out
                    .outputs
                    .iter()
                    .map(|&(off, idx)| match out.meta.get(idx) {
                        Some(UserMeta::Elf(elf)) => {
                            Some(format!("{}+{off:#x}", elf.path.display()))
                        }
                        _ => None,
                    })
                    .collect();
            }
        }
        let mut objects = objects.into_iter();
        frames
            .into_iter()
            .zip(ips)
            .map(|(f, &a)| match f {
                Some(f) => f,
                None => objects.next().flatten().unwrap_or_else(|| hex(a)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_with_a_name() -> u64 {
        a_function_with_a_name as *const () as u64
    }

    #[test]
    fn symbolizes_own_function_and_caches() {
        let addr = a_function_with_a_name();
        let mut s = StackSymbolizer::new();
        let pid = std::process::id();
        let frames = s.symbolize(pid, &[addr, 0x10]);
        assert!(
            frames[0].contains("a_function_with_a_name"),
            "frames: {frames:?}"
        );
        assert_eq!(frames[1], "0x10");
        let again = s.symbolize(pid, &[addr, 0x10]);
        assert!(Arc::ptr_eq(&frames, &again));
        assert_eq!(s.symbolized, 1);
        s.forget(pid);
        assert_eq!(s.cached, 0);
    }

    #[test]
    fn gone_process_gives_addresses() {
        let mut s = StackSymbolizer::new();
        // Larger than any pid_max.
        let frames = s.symbolize(u32::MAX - 1, &[0x401000, 0x401234]);
        assert_eq!(&frames[..], ["0x401000", "0x401234"]);
        assert_eq!(s.process_gone, 1);
    }
}
