//! The one wasmtime `Engine`, its linker, the compiled-component cache and the epoch clock.
//!
//! - Pooling allocator: instance slots are reserved up front, so a fresh instance per invocation
//!   costs microseconds; memories start from copy-on-write images of the component's data.
//! - Epoch interruption: a background thread advances the engine's epoch every [`EPOCH_TICK`]; each
//!   store gets a deadline in ticks, so an infinite loop is stopped without fuel's per-instruction
//!   cost.
//! - Compiled components are cached on disk under the SHA-256 of their bytes and the engine's
//!   compatibility hash, so a control plane restart loads plugins without recompiling them. Only a
//!   plugin that passed validation is cached: a refused upload leaves nothing behind. The cache
//!   keeps to [`RuntimeOptions::cache_bytes`]: beyond it, the entries used least recently go,
//!   except those [pinned](Runtime::pin) (the platform's plugins, which every start loads).
//! - Compiling is CPU work of unbounded length for bytes an organization chose (a component can be
//!   crafted to compile for a minute): it runs on the blocking pool, at most
//!   [`RuntimeOptions::compile_slots`] at a time, and a caller stops waiting after
//!   [`RuntimeOptions::compile_timeout`]. The async workers that answer the API never compile.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::plugin::PluginError;
use crate::state::RunState;

/// Bytes of each pooled memory kept mapped between invocations (dirty pages are reset in place).
const KEEP_RESIDENT: usize = 2 << 20;

/// Granularity of deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Instances that may exist at once (the pool's size).
    pub max_instances: u32,
    /// The largest linear memory any invocation may be given.
    pub max_memory: usize,
    /// The largest component accepted, in bytes (a Python component is ~18 MB).
    pub max_component_bytes: usize,
    /// How many components compile at once; the rest wait their turn.
    pub compile_slots: usize,
    /// How long a load waits for its compile before the plugin is refused.
    pub compile_timeout: Duration,
    /// The most the compiled-component cache keeps on disk, in bytes.
    pub cache_bytes: u64,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: None,
            max_instances: 64,
            max_memory: 1 << 30,
            max_component_bytes: 64 << 20,
            compile_slots: 1,
            compile_timeout: Duration::from_secs(120),
            cache_bytes: 2 << 30,
        }
    }
}

/// Counts of how components were obtained.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub compiled: AtomicU64,
    pub loaded_from_cache: AtomicU64,
    /// Compiles in progress on the blocking pool.
    pub compiling: AtomicU64,
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<RunState>,
    options: RuntimeOptions,
    stats: Arc<CacheStats>,
    compile_slots: Arc<tokio::sync::Semaphore>,
    stop_clock: Arc<AtomicBool>,
    /// Hashes of the components whose cache entries are never evicted.
    pinned: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    pub fn new(options: RuntimeOptions) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        let slots = options.max_instances;
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 8)
            .max_memory_size(options.max_memory)
            .max_core_instances_per_component(16)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            // Reset only the pages an invocation dirtied, in place, instead of unmapping the slot
            // and faulting pages back in on the next instantiation (Linux ≥ 6.7; ignored elsewhere).
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT / 16)
            .async_stack_keep_resident(KEEP_RESIDENT / 16);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Every host interface of the contract, implemented on the invocation's state.
        crate::bindings::PluginBase::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |state| state,
        )?;

        if let Some(dir) = &options.cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create component cache {}: {e}", dir.display())
            })?;
        }

        let stop_clock = Arc::new(AtomicBool::new(false));
        let (clock_engine, stop) = (engine.clone(), stop_clock.clone());
        std::thread::Builder::new()
            .name("berth-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    clock_engine.increment_epoch();
                }
            })?;

        Ok(Runtime {
            engine,
            linker,
            compile_slots: Arc::new(tokio::sync::Semaphore::new(options.compile_slots.max(1))),
            options,
            stats: Arc::default(),
            stop_clock,
            pinned: Mutex::default(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Linker<RunState> {
        &self.linker
    }

    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Deadline in epoch ticks, rounded up, at least one.
    pub(crate) fn ticks(deadline: Duration) -> u64 {
        (deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1)
    }

    /// Compiles `bytes` (or loads the compiled code from the cache) off the async workers.
    /// Returns the component, the SHA-256 of the bytes and whether it came from the cache; the
    /// caller keeps a freshly compiled one with [`Runtime::keep`] once it is validated.
    pub(crate) async fn compile(
        &self,
        bytes: &[u8],
    ) -> Result<(Component, String, bool), PluginError> {
        if bytes.len() > self.options.max_component_bytes {
            return Err(PluginError::TooLarge {
                size: bytes.len(),
                limit: self.options.max_component_bytes,
            });
        }
        check_header(bytes)?;
        let hash = hex::encode(Sha256::digest(bytes));
        if let Some(path) = self.cache_path(&hash)
            && path.exists()
        {
            // SAFETY: the cache directory belongs to the control plane and holds only files
            // `keep` wrote via `Component::serialize`, named by the hash of their source and of
            // the engine's configuration; wasmtime checks the compatibility header again on load.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(&self.engine, &path) };
            if let Ok(component) = loaded {
                // Its use is what keeps an entry in the cache.
                let _ = touch(&path);
                self.stats.loaded_from_cache.fetch_add(1, Ordering::Relaxed);
                return Ok((component, hash, true));
            }
            // A stale or damaged entry: fall through, recompile and replace it.
        }
        let slot = self
            .compile_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PluginError::Compile("the runtime is shutting down".into()))?;
        let (engine, stats, source) = (self.engine.clone(), self.stats.clone(), bytes.to_vec());
        let compiling = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            stats.compiling.fetch_add(1, Ordering::Relaxed);
            let component = Component::new(&engine, &source);
            stats.compiling.fetch_sub(1, Ordering::Relaxed);
            stats.compiled.fetch_add(1, Ordering::Relaxed);
            component
        });
        let limit = self.options.compile_timeout;
        let component = match tokio::time::timeout(limit, compiling).await {
            Err(_) => return Err(PluginError::CompileTimeout(limit)),
            Ok(Err(e)) => return Err(PluginError::Compile(format!("the compiler failed: {e}"))),
            Ok(Ok(compiled)) => compiled.map_err(|e| PluginError::Compile(format!("{e:#}")))?,
        };
        Ok((component, hash, false))
    }

    /// Keeps a validated component's compiled code in the cache, then brings the cache back
    /// within its size. A cache that cannot be written costs speed, not correctness.
    pub(crate) fn keep(&self, hash: &str, component: &Component) {
        let (Some(path), Some(dir)) = (self.cache_path(hash), &self.options.cache_dir) else {
            return;
        };
        let _ = write_atomically(&path, component);
        let pinned = self
            .pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let _ = evict(dir, self.options.cache_bytes, |entry| {
            entry == hash || pinned.contains(entry)
        });
    }

    /// Keeps the compiled code of the component whose SHA-256 is `hash` in the cache whatever
    /// its size: the platform's plugins, which every start of the control plane loads.
    pub fn pin(&self, hash: &str) {
        self.pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash.to_string());
    }

    fn cache_path(&self, hash: &str) -> Option<PathBuf> {
        let dir = self.options.cache_dir.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        Some(dir.join(format!("{hash}-{:016x}.cwasm", hasher.finish())))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_clock.store(true, Ordering::Relaxed);
    }
}

/// Marks a cache entry used now.
fn touch(path: &Path) -> std::io::Result<()> {
    std::fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(SystemTime::now())
}

/// Removes the entries of the cache in `dir` used least recently (by modification time, which a
/// load from the cache renews), skipping those `kept` names by the hash of their component, until
/// the cache fits in `budget` bytes. Returns what it removed.
fn evict(dir: &Path, budget: u64, kept: impl Fn(&str) -> bool) -> std::io::Result<Vec<PathBuf>> {
    let mut total = 0;
    let mut candidates = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "cwasm") {
            continue;
        }
        let meta = entry.metadata()?;
        total += meta.len();
        let name = path.file_stem().unwrap_or_default().to_string_lossy();
        let hash = name.split('-').next().unwrap_or_default();
        if !kept(hash) {
            candidates.push((meta.modified()?, meta.len(), path));
        }
    }
    candidates.sort();
    let mut removed = Vec::new();
    for (_, len, path) in candidates {
        if total <= budget {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
            removed.push(path);
        }
    }
    Ok(removed)
}

fn write_atomically(path: &Path, component: &Component) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.persist(path)?;
    Ok(())
}

/// Tells a component from a core module and from anything else, before the compiler does.
fn check_header(bytes: &[u8]) -> Result<(), PluginError> {
    const MAGIC: &[u8; 4] = b"\0asm";
    const CORE: [u8; 4] = [1, 0, 0, 0];
    const COMPONENT: [u8; 4] = [0x0d, 0, 1, 0];
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(PluginError::NotAComponent(
            "not a WebAssembly component: the file does not start with the WebAssembly magic bytes"
                .into(),
        ));
    }
    let version: [u8; 4] = bytes[4..8].try_into().expect("length checked above");
    match version {
        v if v == COMPONENT => Ok(()),
        v if v == CORE => Err(PluginError::NotAComponent(
            "not a WebAssembly component: this is a core module; build the plugin for wasm32-wasip2 \
             with berth-sdk, which produces a component"
                .into(),
        )),
        v => Err(PluginError::NotAComponent(format!(
            "not a WebAssembly component: unknown binary version {v:02x?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    //! The compiled-component cache keeps to its size: the least recently used entries go first,
    //! and a pinned entry (a platform plugin's) never goes.

    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use super::{evict, touch};

    /// A cache entry of `len` bytes for component `hash`, last used `age` ago.
    fn entry(dir: &Path, hash: &str, len: usize, age: u64) {
        let path = dir.join(format!("{hash}-0123456789abcdef.cwasm"));
        std::fs::write(&path, vec![0u8; len]).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age))
            .unwrap();
    }

    fn left(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy()[..3].to_string())
            .collect();
        names.sort();
        names
    }

    /// Each upload under a new hash once added an entry to a cache that never shrank.
    #[test]
    fn the_cache_evicts_the_least_recently_used_entries_but_never_a_pinned_one() {
        let dir = tempfile::tempdir().unwrap();
        entry(dir.path(), "aaa", 100, 400);
        entry(dir.path(), "bbb", 100, 300);
        entry(dir.path(), "ccc", 100, 200);
        entry(dir.path(), "ddd", 100, 100);
        std::fs::write(dir.path().join("notes.txt"), "not an entry").unwrap();
        touch(&dir.path().join("bbb-0123456789abcdef.cwasm")).unwrap();
        let removed = evict(dir.path(), 250, |hash| hash == "aaa").unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert_eq!(
            left(dir.path()),
            ["aaa", "bbb", "not"],
            "used recently, or pinned"
        );
        assert!(evict(dir.path(), 250, |_| false).unwrap().is_empty());
        evict(dir.path(), 0, |hash| hash == "aaa").unwrap();
        assert_eq!(left(dir.path()), ["aaa", "not"]);
    }
}
