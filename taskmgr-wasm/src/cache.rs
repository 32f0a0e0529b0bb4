//! Compiled programs, cached by content hash so that deploying the same module again costs a
//! lookup instead of a compilation (tens of milliseconds for a C program, more for large
//! ones). Bounded by entries and by compiled code size, least recently used evicted first.
//! Concurrent deploys of the same new program wait for one compilation, which runs in a
//! child process (`compiler.rs`) in its domain's turn (`compile_queue.rs`) and is charged to
//! that domain.

use crate::Domain;
use crate::compile_queue::CompileQueue;
use crate::compiler::CompileError;
use crate::engine::Runtime;
use crate::error::Error;
use crate::host::{ComponentHost, ModuleHost};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::OnceCell;
use wasmtime::component::Component;
use wasmtime::{InstancePre, Module};
use wasmtime_wasi::p2::bindings::CommandPre;
use xeno_taskmgr_kit::lock;

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
    /// Turns for programs above `small_bytes_max`.
    queue: Arc<CompileQueue>,
    /// Turns for small programs, so that they never wait behind big compilations.
    quick: Arc<CompileQueue>,
    small_bytes_max: u64,
}

impl ModuleCache {
    pub(crate) fn new(
        entries_max: usize,
        code_bytes_max: u64,
        compile_concurrency: usize,
        small_bytes_max: u64,
    ) -> Self {
        ModuleCache {
            entries_max,
            code_bytes_max,
            slots: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            queue: CompileQueue::new(compile_concurrency),
            quick: CompileQueue::new(1),
            small_bytes_max,
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

    /// The compiled form of `bytes` (whose SHA-256 is `sha256`), compiling it in a child
    /// process (waited for on `blocking` threads) if it is not cached, in `domain`'s turn and
    /// at its expense.
    pub(crate) async fn get_or_compile(
        &self,
        runtime: &Arc<Runtime>,
        blocking: &tokio::runtime::Handle,
        domain: &Domain,
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
        let result = slot
            .compiled
            .get_or_try_init(|| async {
                compiled_here.store(true, Ordering::Relaxed);
                let lane = if bytes.len() as u64 <= self.small_bytes_max {
                    &self.quick
                } else {
                    &self.queue
                };
                let _turn = lane.turn(&domain.id).await;
                let compiling = Arc::clone(runtime);
                let compiled = blocking
                    .spawn_blocking(move || compiling.compilers.compile(kind, &bytes))
                    .await
                    .map_err(|error| Error::Internal(format!("compilation panicked: {error}")))?;
                let artifact = match compiled {
                    Ok(artifact) => artifact,
                    Err(CompileError::Invalid(message)) => return Err(Error::Invalid(message)),
                    Err(CompileError::Limit { reason, cpu }) => {
                        domain.charge_compilation(cpu);
                        return Err(Error::Exhausted(reason));
                    }
                    Err(error @ CompileError::Internal(_)) => {
                        return Err(Error::Internal(error.to_string()));
                    }
                };
                domain.charge_compilation(artifact.cpu);
                load(runtime, kind, &artifact.bytes).map(Arc::new)
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

/// Loads an artifact the compiler child made and links it against WASI.
fn load(runtime: &Runtime, kind: ProgramKind, artifact: &[u8]) -> Result<Compiled, Error> {
    let invalid = |what: &str, error: wasmtime::Error| Error::Invalid(format!("{what}: {error:#}"));
    let unloadable = |error: wasmtime::Error| {
        Error::Internal(format!("cannot load the compiled program: {error:#}"))
    };
    match kind {
        ProgramKind::Module => {
            // SAFETY: the artifact was made by Wasmtime in our own compiler child, from an
            // engine configured with this engine's settings (`EngineSettings`), and came
            // straight through a pipe only the two processes held; Wasmtime also checks that
            // the engine configurations match before using it.
            let module =
                unsafe { Module::deserialize(&runtime.engine, artifact) }.map_err(unloadable)?;
            let pre = runtime
                .module_linker
                .instantiate_pre(&module)
                .map_err(|error| {
                    invalid("module cannot be linked against WASI preview 1", error)
                })?;
            Ok(Compiled::Module { module, pre })
        }
        ProgramKind::Component => {
            // SAFETY: as for modules above: our own compiler child's artifact, made with this
            // engine's settings.
            let component =
                unsafe { Component::deserialize(&runtime.engine, artifact) }.map_err(unloadable)?;
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
