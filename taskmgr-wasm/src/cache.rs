//! Compiled programs, cached by content hash so that deploying the same module again costs a
//! lookup instead of a compilation (tens of milliseconds for a C program, more for large
//! ones). Bounded by entries and by compiled code size, least recently used evicted first.
//! Concurrent deploys of the same new program wait for one compilation.

use crate::engine::Runtime;
use crate::error::Error;
use crate::host::{ComponentHost, ModuleHost};
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{OnceCell, Semaphore};
use wasmtime::component::Component;
use wasmtime::{InstancePre, Module};
use wasmtime_wasi::p2::bindings::CommandPre;

/// Whether a payload is run as a core module or a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ProgramKind {
    Module,
    Component,
}

/// A program compiled and linked against WASI, ready to instantiate.
pub(crate) enum Compiled {
    Module {
        module: Module,
        pre: InstancePre<ModuleHost>,
    },
    Component {
        pre: CommandPre<ComponentHost>,
    },
}

impl Compiled {
    fn code_bytes(&self) -> u64 {
        let range = match self {
            Compiled::Module { module, .. } => module.image_range(),
            Compiled::Component { pre } => pre.instance_pre().component().image_range(),
        };
        (range.end as usize).saturating_sub(range.start as usize) as u64
    }
}

/// Counters of the cache, for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Deploys that found their program compiled (or being compiled).
    pub hits: u64,
    /// Deploys that compiled their program.
    pub misses: u64,
    /// Programs held now.
    pub entries: u64,
    /// Compiled code held now, bytes.
    pub code_bytes: u64,
}

struct Slot {
    compiled: OnceCell<Arc<Compiled>>,
    last_used: AtomicU64,
}

type Key = (ProgramKind, String);

pub(crate) struct ModuleCache {
    entries_max: usize,
    code_bytes_max: u64,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    clock: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    compilations: Semaphore,
}

impl ModuleCache {
    pub(crate) fn new(entries_max: usize, code_bytes_max: u64, compile_concurrency: usize) -> Self {
        ModuleCache {
            entries_max,
            code_bytes_max,
            slots: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            compilations: Semaphore::new(compile_concurrency.max(1)),
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let slots = lock(&self.slots);
        let ready = slots.values().filter_map(|slot| slot.compiled.get());
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: slots.len() as u64,
            code_bytes: ready.map(|compiled| compiled.code_bytes()).sum(),
        }
    }

    /// The compiled form of `bytes` (whose SHA-256 is `sha256`), compiling it on
    /// `blocking` threads if it is not cached.
    pub(crate) async fn get_or_compile(
        &self,
        runtime: &Arc<Runtime>,
        blocking: &tokio::runtime::Handle,
        kind: ProgramKind,
        sha256: &str,
        bytes: bytes::Bytes,
    ) -> Result<Arc<Compiled>, Error> {
        let key = (kind, sha256.to_owned());
        let slot = {
            let mut slots = lock(&self.slots);
            Arc::clone(slots.entry(key.clone()).or_insert_with(|| {
                Arc::new(Slot {
                    compiled: OnceCell::new(),
                    last_used: AtomicU64::new(0),
                })
            }))
        };
        slot.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        if let Some(compiled) = slot.compiled.get() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Arc::clone(compiled));
        }
        let compiled_here = AtomicBool::new(false);
        let result =
            slot.compiled
                .get_or_try_init(|| async {
                    compiled_here.store(true, Ordering::Relaxed);
                    let _permit =
                        self.compilations.acquire().await.map_err(|_| {
                            Error::Internal("the compiler pool is closed".to_owned())
                        })?;
                    let runtime = Arc::clone(runtime);
                    blocking
                        .spawn_blocking(move || compile(&runtime, kind, &bytes))
                        .await
                        .map_err(|error| Error::Internal(format!("compilation panicked: {error}")))?
                        .map(Arc::new)
                })
                .await
                .map(Arc::clone);
        let counter = if compiled_here.load(Ordering::Relaxed) {
            &self.misses
        } else {
            &self.hits
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut slots = lock(&self.slots);
        match &result {
            Err(_) => {
                // Do not keep failures: the slot may be retried with the same bytes.
                if slots
                    .get(&key)
                    .is_some_and(|current| Arc::ptr_eq(current, &slot))
                {
                    slots.remove(&key);
                }
            }
            Ok(_) => self.evict(&mut slots),
        }
        result
    }

    fn evict(&self, slots: &mut HashMap<Key, Arc<Slot>>) {
        loop {
            let ready = slots.iter().filter(|(_, slot)| slot.compiled.initialized());
            let code_bytes: u64 = ready
                .clone()
                .filter_map(|(_, slot)| slot.compiled.get())
                .map(|compiled| compiled.code_bytes())
                .sum();
            if slots.len() <= self.entries_max && code_bytes <= self.code_bytes_max {
                return;
            }
            let oldest = ready
                .min_by_key(|(_, slot)| slot.last_used.load(Ordering::Relaxed))
                .map(|(key, _)| key.clone());
            // Keep at least the newest program even if it alone exceeds the byte bound.
            match oldest {
                Some(key) if slots.len() > 1 => {
                    slots.remove(&key);
                }
                _ => return,
            }
        }
    }
}

fn compile(runtime: &Runtime, kind: ProgramKind, bytes: &[u8]) -> Result<Compiled, Error> {
    let invalid = |what: &str, error: wasmtime::Error| Error::Invalid(format!("{what}: {error:#}"));
    match kind {
        ProgramKind::Module => {
            let module = Module::new(&runtime.engine, bytes)
                .map_err(|error| invalid("invalid WebAssembly module", error))?;
            let pre = runtime
                .module_linker
                .instantiate_pre(&module)
                .map_err(|error| {
                    invalid("module cannot be linked against WASI preview 1", error)
                })?;
            Ok(Compiled::Module { module, pre })
        }
        ProgramKind::Component => {
            let component = Component::new(&runtime.engine, bytes)
                .map_err(|error| invalid("invalid WebAssembly component", error))?;
            let pre = runtime
                .component_linker
                .instantiate_pre(&component)
                .map_err(|error| {
                    invalid("component cannot be linked against WASI preview 2", error)
                })?;
            let pre = CommandPre::new(pre)
                .map_err(|error| invalid("component does not export wasi:cli/run", error))?;
            Ok(Compiled::Component { pre })
        }
    }
}
