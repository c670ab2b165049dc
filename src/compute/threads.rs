//! Thread budget for ONNX Runtime, OpenMP and BLAS (see the module docs of `compute`).

use serde::Serialize;

/// Effective thread settings, logged once when the worker starts.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadSettings {
    pub budget: usize,
    pub ort_intra_op: usize,
    pub ort_inter_op: usize,
    pub omp_max_threads: i32,
    pub openblas_threads: Option<i32>,
    pub env_omp: Option<String>,
    pub env_openblas: Option<String>,
    pub env_mkl: Option<String>,
}

/// Sets OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS to the thread budget. Call first thing in main(),
/// before the async runtime (or any other thread) exists: the environment is not thread-safe to modify later.
pub fn pin_thread_env(threads: usize) {
    let n = threads.max(1).to_string();
    for var in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"] {
        // SAFETY (edition 2021 API): called before other threads exist.
        std::env::set_var(var, &n);
    }
    set_library_threads(threads);
}

extern "C" {
    fn omp_set_num_threads(n: std::os::raw::c_int);
    fn omp_get_max_threads() -> std::os::raw::c_int;
}

/// OpenBLAS reads its environment when it is loaded (before main), so also set it at run time when it is there.
fn openblas_threads(set: Option<usize>) -> Option<i32> {
    unsafe {
        let setter = libc::dlsym(libc::RTLD_DEFAULT, c"openblas_set_num_threads".as_ptr());
        let getter = libc::dlsym(libc::RTLD_DEFAULT, c"openblas_get_num_threads".as_ptr());
        if let (Some(n), false) = (set, setter.is_null()) {
            let f: extern "C" fn(std::os::raw::c_int) = std::mem::transmute(setter);
            f(n as std::os::raw::c_int);
        }
        if getter.is_null() {
            None
        } else {
            let f: extern "C" fn() -> std::os::raw::c_int = std::mem::transmute(getter);
            Some(f())
        }
    }
}

/// OpenMP (per calling thread) and OpenBLAS thread counts.
pub(super) fn set_library_threads(threads: usize) {
    unsafe { omp_set_num_threads(threads.max(1) as std::os::raw::c_int) };
    openblas_threads(Some(threads.max(1)));
}

/// What the calling thread (the worker) ended up with.
pub(super) fn current(threads: usize) -> ThreadSettings {
    ThreadSettings {
        budget: threads,
        ort_intra_op: threads,
        ort_inter_op: 1,
        omp_max_threads: unsafe { omp_get_max_threads() },
        openblas_threads: openblas_threads(None),
        env_omp: std::env::var("OMP_NUM_THREADS").ok(),
        env_openblas: std::env::var("OPENBLAS_NUM_THREADS").ok(),
        env_mkl: std::env::var("MKL_NUM_THREADS").ok(),
    }
}
