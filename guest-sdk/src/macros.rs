//! The [`export!`](crate::export) macro: registration of workflows and activities.
//!
//! It is a declarative macro rather than attributes on each function because a module has
//! exactly one export table and one manifest: listing everything in one place makes the
//! manifest's content obvious, needs no proc-macro crate (faster builds, smaller dependency
//! tree), and lets duplicate names be rejected at compile time.

/// Registers a module's workflows and activities and generates its wasm exports.
///
/// Invoke it once, at the crate root of a `cdylib` crate built for `wasm32-wasip1`:
///
/// ```
/// use pinion_sdk::{ActivityError, WorkflowContext, WorkflowError};
///
/// async fn hello_workflow(ctx: WorkflowContext, name: String) -> Result<String, WorkflowError> {
///     let greeting: String = ctx.activity("greet", &name).await?;
///     Ok(greeting)
/// }
///
/// fn greet(name: String) -> Result<String, ActivityError> {
///     Ok(format!("hello, {name}"))
/// }
///
/// pinion_sdk::export! {
///     version: "v1",
///     workflows: { "Hello" => hello_workflow },
///     activities: { "greet" => greet },
/// }
/// # fn main() {}
/// ```
///
/// All three sections are optional but must come in this order: `version` (a string literal,
/// becomes `Manifest::version_label`), `workflows`, `activities`. Names are string literals;
/// a name registered twice in a section is a compile error.
///
/// ```
/// use pinion_sdk::{WorkflowContext, WorkflowError};
/// use serde_json::Value;
///
/// async fn echo(_ctx: WorkflowContext, input: Value) -> Result<Value, WorkflowError> {
///     Ok(input)
/// }
///
/// pinion_sdk::export! { workflows: { "Echo" => echo } }
/// # fn main() {
/// # assert_eq!(pinion_sdk::__rt::manifest(&__PINION_MODULE).version_label, None);
/// # }
/// ```
///
/// ```compile_fail
/// # use pinion_sdk::{WorkflowContext, WorkflowError};
/// # async fn a(_: WorkflowContext, _: ()) -> Result<(), WorkflowError> { Ok(()) }
/// pinion_sdk::export! { workflows: { "A" => a, "A" => a } } // duplicate name
/// # fn main() {}
/// ```
///
/// A **workflow** is `async fn(WorkflowContext, In) -> Result<Out, WorkflowError>` with
/// `In: DeserializeOwned` and `Out: Serialize` (any function or closure returning such a
/// future, as long as the future is `'static`).
///
/// An **activity** is any of
/// - `fn(In) -> Result<Out, ActivityError>`
/// - `fn(ActivityContext, In) -> Result<Out, ActivityError>`
/// - `fn() -> Result<Out, ActivityError>`
///
/// Inputs and outputs travel as JSON. An empty input payload reads as JSON `null`.
///
/// On `wasm32` the macro generates the exports named in `pinion_abi::exports`:
/// `pinion_abi_version`, `pinion_manifest`, `pinion_alloc`, `pinion_free`,
/// `pinion_activate`, `pinion_query` and `pinion_run_activity`. On other targets (host-side tests) it only
/// generates the table, `__PINION_MODULE`, which tests can drive through the SDK's hidden
/// runtime module.
#[macro_export]
macro_rules! export {
    (
        $(version: $version:literal $(,)?)?
        $(workflows: { $($wname:literal => $wfn:expr),* $(,)? } $(,)?)?
        $(activities: { $($aname:literal => $afn:expr),* $(,)? } $(,)?)?
    ) => {
        #[doc(hidden)]
        pub static __PINION_MODULE: $crate::__rt::Module = $crate::__rt::Module {
            version_label: {
                #[allow(unused_mut)]
                let mut label: ::core::option::Option<&'static str> = ::core::option::Option::None;
                $(label = ::core::option::Option::Some($version);)?
                label
            },
            workflows: &[$($($crate::__rt::WorkflowDef {
                name: $wname,
                start: |ctx, input| $crate::__rt::start_workflow(ctx, input, $wfn),
            },)*)?],
            activities: &[$($($crate::__rt::ActivityDef {
                name: $aname,
                run: |ctx, input| $crate::__rt::invoke_activity(ctx, input, $afn),
            },)*)?],
        };

        const _: () = {
            assert!(
                !$crate::__rt::has_duplicate(&[$($($wname),*)?]),
                "pinion_sdk::export!: a workflow name is registered twice"
            );
            assert!(
                !$crate::__rt::has_duplicate(&[$($($aname),*)?]),
                "pinion_sdk::export!: an activity name is registered twice"
            );
        };

        #[cfg(target_family = "wasm")]
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "C" fn pinion_abi_version() -> i32 {
            $crate::__rt::abi_version()
        }

        #[cfg(target_family = "wasm")]
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "C" fn pinion_manifest() -> i64 {
            $crate::__rt::manifest_export(&__PINION_MODULE)
        }

        #[cfg(target_family = "wasm")]
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "C" fn pinion_alloc(len: i32) -> i32 {
            $crate::__rt::alloc(len)
        }

        #[cfg(target_family = "wasm")]
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "C" fn pinion_free(ptr: i32, len: i32) {
            // SAFETY: only the host calls this, with buffers it got from pinion_alloc or from
            // an entry point's response, as the ABI requires.
            unsafe { $crate::__rt::free(ptr, len) }
        }

        #[cfg(target_family = "wasm")]
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "C" fn pinion_activate(ptr: i32, len: i32) -> i64 {
            // SAFETY: the host passes a request buffer from pinion_alloc and gives it up.
            unsafe { $crate::__rt::activate_export(&__PINION_MODULE, ptr, len) }
        }

        #[cfg(target_family = "wasm")]
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "C" fn pinion_query(ptr: i32, len: i32) -> i64 {
            // SAFETY: as for pinion_activate.
            unsafe { $crate::__rt::query_export(ptr, len) }
        }

        #[cfg(target_family = "wasm")]
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "C" fn pinion_run_activity(ptr: i32, len: i32) -> i64 {
            // SAFETY: as for pinion_activate.
            unsafe { $crate::__rt::run_activity_export(&__PINION_MODULE, ptr, len) }
        }
    };
}
