//! The WASI preview 1 surface of **workflow** instances, written here rather than taken from
//! `wasmtime-wasi` so that every function a workflow can reach is visibly deterministic.
//! (Activities get `wasmtime-wasi` itself, see [`super::activity`]. `wasmtime-wasi` can
//! inject clocks and random, but its `poll_oneoff` sleeps on real time, its `fd_*` family
//! opens stdin and its clocks are read through traits with no notion of an activation; the
//! fifteen functions below are smaller than the adapter it would take.)
//!
//! | function | workflow instance |
//! |---|---|
//! | `clock_time_get` | the activation's logical time (from history) |
//! | `random_get` | a PRNG seeded from the start event |
//! | `fd_write` to 1, 2 | captured as log records |
//! | `args_*`, `environ_*` | empty |
//! | `fd_prestat_get` | `EBADF`: no preopened directories |
//! | `poll_oneoff` (sleep) | `ENOTCAPABLE`: workflows use durable timers |
//! | `proc_exit` | traps |
//! | `pinion::http_send` | traps: workflows reach the world through activities |
//! | anything else | `ENOSYS` |
//!
//! Because the workflow's clock and PRNG are fed from history, a workflow that calls
//! `SystemTime::now()` or seeds `rand` from the OS sees the same values on every replay.
//! Every pointer and length the guest passes is checked against its memory before the host
//! allocates or copies anything.

use pinion_abi::imports;
use wasmtime::{Caller, Extern, FuncType, Linker, Val};

use super::GuestState;

/// WASI errno values used here.
mod errno {
    pub const SUCCESS: i32 = 0;
    pub const BADF: i32 = 8;
    pub const FAULT: i32 = 21;
    pub const INVAL: i32 = 28;
    pub const NOSYS: i32 = 52;
    pub const NOTCAPABLE: i32 = 76;
}

/// The WASI module name.
pub const WASI: &str = "wasi_snapshot_preview1";

/// Functions [`add_to_linker`] defines.
const PROVIDED: &[&str] = &[
    "args_sizes_get",
    "args_get",
    "environ_sizes_get",
    "environ_get",
    "clock_res_get",
    "clock_time_get",
    "random_get",
    "fd_write",
    "fd_fdstat_get",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_close",
    "sched_yield",
    "proc_exit",
    "poll_oneoff",
];

/// SplitMix64: tiny, fast and good enough for a deterministic byte stream.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn memory(caller: &mut Caller<'_, GuestState>) -> Option<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

fn write_bytes(caller: &mut Caller<'_, GuestState>, ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    let mem = memory(caller).ok_or(errno::FAULT)?;
    mem.write(caller, ptr as u32 as usize, bytes)
        .map_err(|_| errno::FAULT)
}

/// Copies `ptr..ptr+len` out of guest memory; the range is checked before anything is
/// allocated, so a huge length costs the host nothing.
fn read_bytes(caller: &mut Caller<'_, GuestState>, ptr: i32, len: usize) -> Result<Vec<u8>, i32> {
    let mem = memory(caller).ok_or(errno::FAULT)?;
    let start = ptr as u32 as usize;
    let end = start.checked_add(len).ok_or(errno::FAULT)?;
    mem.data(&*caller)
        .get(start..end)
        .map(<[u8]>::to_vec)
        .ok_or(errno::FAULT)
}

fn u32_at(bytes: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4 bytes"))
}

fn status(r: Result<(), i32>) -> i32 {
    r.err().unwrap_or(errno::SUCCESS)
}

/// Defines every WASI function pinion provides in `linker`.
pub fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        WASI,
        "args_sizes_get",
        |mut c: Caller<'_, GuestState>, argc: i32, size: i32| {
            status(
                write_bytes(&mut c, argc, &0u32.to_le_bytes())
                    .and_then(|_| write_bytes(&mut c, size, &0u32.to_le_bytes())),
            )
        },
    )?;
    linker.func_wrap(
        WASI,
        "args_get",
        |_: Caller<'_, GuestState>, _argv: i32, _buf: i32| errno::SUCCESS,
    )?;
    linker.func_wrap(
        WASI,
        "environ_sizes_get",
        |mut c: Caller<'_, GuestState>, n: i32, size: i32| {
            status(
                write_bytes(&mut c, n, &0u32.to_le_bytes())
                    .and_then(|_| write_bytes(&mut c, size, &0u32.to_le_bytes())),
            )
        },
    )?;
    linker.func_wrap(
        WASI,
        "environ_get",
        |_: Caller<'_, GuestState>, _env: i32, _buf: i32| errno::SUCCESS,
    )?;

    linker.func_wrap(
        WASI,
        "clock_res_get",
        |mut c: Caller<'_, GuestState>, _id: i32, out: i32| {
            status(write_bytes(&mut c, out, &1_000_000u64.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Caller<'_, GuestState>, id: i32, _precision: i64, out: i32| {
            if !(0..=3).contains(&id) {
                return errno::INVAL;
            }
            let ns = c.data().now_ms.saturating_mul(1_000_000);
            status(write_bytes(&mut c, out, &ns.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        WASI,
        "random_get",
        |mut c: Caller<'_, GuestState>, ptr: i32, len: i32| {
            // In chunks: the guest chooses `len`, and host memory is not its to spend.
            let mut chunk = [0u8; 4096];
            let (mut at, end) = (ptr as u32 as u64, ptr as u32 as u64 + len.max(0) as u64);
            while at < end {
                let n = (end - at).min(chunk.len() as u64) as usize;
                c.data_mut().rng.fill(&mut chunk[..n]);
                if let Err(e) = write_bytes(&mut c, at as i32, &chunk[..n]) {
                    return e;
                }
                at += n as u64;
            }
            errno::SUCCESS
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Caller<'_, GuestState>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32| {
            if fd != 1 && fd != 2 {
                return errno::BADF;
            }
            if iovs_len < 0 {
                return errno::INVAL;
            }
            let iov = match read_bytes(&mut c, iovs, iovs_len as usize * 8) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let mut total = 0u32;
            for i in 0..iovs_len.max(0) as usize {
                let (ptr, len) = (u32_at(&iov, i * 8), u32_at(&iov, i * 8 + 4));
                // Only what will be kept is copied out; the rest is counted as written.
                let keep = (len as usize).min(c.data().capture_room(fd));
                let data = match read_bytes(&mut c, ptr as i32, keep) {
                    Ok(d) => d,
                    Err(e) => return e,
                };
                c.data_mut().capture(fd, &data);
                total = total.saturating_add(len);
            }
            status(write_bytes(&mut c, nwritten, &total.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_get",
        |mut c: Caller<'_, GuestState>, fd: i32, out: i32| {
            if !(0..=2).contains(&fd) {
                return errno::BADF;
            }
            // filetype CHARACTER_DEVICE (2), no flags, write rights only.
            let mut stat = [0u8; 24];
            stat[0] = 2;
            stat[8..16].copy_from_slice(&(1u64 << 6).to_le_bytes());
            status(write_bytes(&mut c, out, &stat))
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_get",
        |_: Caller<'_, GuestState>, _fd: i32, _out: i32| errno::BADF,
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_dir_name",
        |_: Caller<'_, GuestState>, _fd: i32, _p: i32, _l: i32| errno::BADF,
    )?;
    linker.func_wrap(WASI, "fd_close", |_: Caller<'_, GuestState>, _fd: i32| {
        errno::BADF
    })?;
    linker.func_wrap(WASI, "sched_yield", |_: Caller<'_, GuestState>| {
        errno::SUCCESS
    })?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Caller<'_, GuestState>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "module called proc_exit({code})"
            )))
        },
    )?;
    // Sleeping in workflow code would make replay wait too; durable timers exist.
    linker.func_wrap(
        WASI,
        "poll_oneoff",
        |_: Caller<'_, GuestState>, _subs: i32, _events: i32, _n: i32, _nevents: i32| {
            errno::NOTCAPABLE
        },
    )?;
    for name in imports::ALL {
        let message = if name == imports::HEARTBEAT {
            "heartbeats belong to activities: a workflow called ActivityContext::heartbeat"
        } else {
            "outgoing HTTP is not available to workflow code: it would not replay; \
             make the request in an activity and call the activity from the workflow"
        };
        linker.func_wrap(
            imports::MODULE,
            name,
            move |_: Caller<'_, GuestState>, _ptr: i32, _len: i32| -> wasmtime::Result<i32> {
                Err(wasmtime::Error::msg(message))
            },
        )?;
    }
    Ok(())
}

/// Defines, for each WASI import of `module` that pinion does not provide, a function of
/// the right type that returns `ENOSYS`, so the module links and fails politely if it ever
/// calls it.
pub fn define_missing(
    linker: &mut Linker<GuestState>,
    module: &wasmtime::Module,
) -> wasmtime::Result<()> {
    for import in module.imports() {
        if import.module() != WASI {
            continue;
        }
        let wasmtime::ExternType::Func(ty) = import.ty() else {
            continue;
        };
        if PROVIDED.contains(&import.name()) {
            continue;
        }
        let engine = module.engine();
        let results = ty.results().count();
        let ty2 = FuncType::new(engine, ty.params(), ty.results());
        linker.func_new(
            WASI,
            import.name(),
            ty2,
            move |_c, _params, out: &mut [Val]| {
                for (i, slot) in out.iter_mut().enumerate().take(results) {
                    *slot = if i == 0 {
                        Val::I32(errno::NOSYS)
                    } else {
                        Val::I32(0)
                    };
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}
