//! Mixed stacks: each C call of the eval loop in the native stack is replaced
//! by the Python frames it was running.
//!
//! Stacks are leaf first. The interpreter's own frames between two such calls
//! (`_PyFunction_Vectorcall`, `PyObject_Call`, ...) are call machinery and
//! are hidden; those below the newest Python frame stay (a builtin the code
//! called, such as `time_sleep` or `list_sort`), as do all frames of other
//! modules: C extensions, libtorch, libcudart.

use symbolizer::python::PythonFrame;

/// What a native frame is, for merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeFrameKind {
    /// `_PyEval_EvalFrameDefault` (or its `.cold` part): runs Python frames.
    Eval,
    /// Another function of the interpreter module.
    Interpreter,
    /// Anything else.
    Other,
}

impl NativeFrameKind {
    /// Classifies a native frame by its (outermost) function name and
    /// whether its module is the process's interpreter.
    pub fn of(function: &str, in_interpreter: bool) -> Self {
        if function.starts_with("_PyEval_EvalFrameDefault") || function == "PyEval_EvalFrameEx" {
            Self::Eval
        } else if in_interpreter && function != "_start" {
            // The entry point stays: in an interpreter linked into its
            // executable (Debian's python3.X) it is in the interpreter's
            // module, but it is where every stack is rooted.
            Self::Interpreter
        } else {
            Self::Other
        }
    }
}

/// One frame of a merged stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged<'a, L> {
    Native(L),
    Python(&'a PythonFrame),
}

/// Merges a native stack and the Python frames sampled with it, both leaf
/// first. Without Python frames the native stack is returned as it is. Runs
/// of Python frames left over (a native stack cut short) go at the root end.
pub fn merge<'a, L: Copy>(
    native: &[(L, NativeFrameKind)],
    python: &'a [PythonFrame],
) -> Vec<Merged<'a, L>> {
    if python.is_empty() {
        return native.iter().map(|&(l, _)| Merged::Native(l)).collect();
    }
    let mut groups = python.split_inclusive(|f| f.entry);
    let mut out = Vec::with_capacity(native.len() + python.len());
    let mut leaf_side = true;
    for &(location, kind) in native {
        match kind {
            NativeFrameKind::Eval => {
                leaf_side = false;
                match groups.next() {
                    Some(group) => out.extend(group.iter().map(Merged::Python)),
                    None => out.push(Merged::Native(location)),
                }
            }
            NativeFrameKind::Interpreter if leaf_side => out.push(Merged::Native(location)),
            NativeFrameKind::Interpreter => {}
            NativeFrameKind::Other => {
                leaf_side = false;
                out.push(Merged::Native(location));
            }
        }
    }
    for group in groups {
        out.extend(group.iter().map(Merged::Python));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::NativeFrameKind::{Eval, Interpreter, Other};
    use super::*;

    fn py(name: &str, entry: bool) -> PythonFrame {
        PythonFrame {
            function: name.into(),
            file: "w.py".into(),
            line: Some(1),
            entry,
        }
    }

    fn names<'a>(merged: &[Merged<'a, &'a str>]) -> Vec<&'a str> {
        merged
            .iter()
            .map(|m| match m {
                Merged::Native(n) => *n,
                Merged::Python(f) => &*f.function,
            })
            .collect()
    }

    #[test]
    fn eval_calls_take_their_runs_of_frames() {
        // leaf: a C extension called from Python, called from Python run by
        // an earlier eval call, under a thread's start.
        let native = [
            ("spin_c", Other),
            ("cfunction_call", Interpreter),
            ("_PyEval_EvalFrameDefault", Eval),
            ("_PyFunction_Vectorcall", Interpreter),
            ("ext_callback", Other),
            ("PyObject_Call", Interpreter),
            ("_PyEval_EvalFrameDefault.cold", Eval),
            ("thread_run", Interpreter),
            ("start_thread", Other),
        ];
        let python = [
            py("tokenize", false),
            py("model_step", true),
            py("handle", false),
            py("run", true),
        ];
        assert_eq!(
            names(&merge(&native, &python)),
            [
                "spin_c",
                "tokenize",
                "model_step",
                "ext_callback",
                "handle",
                "run",
                "start_thread"
            ]
        );
    }

    #[test]
    fn interpreter_frames_below_the_newest_python_frame_stay() {
        let native = [
            ("time_sleep", Interpreter),
            ("_PyEval_EvalFrameDefault", Eval),
            ("Py_RunMain", Interpreter),
            ("main", Other),
        ];
        let python = [py("wait", false), py("<module>", true)];
        assert_eq!(
            names(&merge(&native, &python)),
            ["time_sleep", "wait", "<module>", "main"]
        );
    }

    #[test]
    fn without_python_frames_nothing_changes() {
        let native = [
            ("a", Interpreter),
            ("_PyEval_EvalFrameDefault", Eval),
            ("b", Other),
        ];
        assert_eq!(
            names(&merge(&native, &[])),
            ["a", "_PyEval_EvalFrameDefault", "b"]
        );
    }

    #[test]
    fn frames_left_over_go_to_the_root() {
        let native = [("_PyEval_EvalFrameDefault", Eval)];
        let python = [py("f", true), py("g", true)];
        assert_eq!(names(&merge(&native, &python)), ["f", "g"]);
        // More eval calls than runs: the extra ones stay visible.
        let native = [
            ("_PyEval_EvalFrameDefault", Eval),
            ("_PyEval_EvalFrameDefault", Eval),
        ];
        let python = [py("f", true)];
        assert_eq!(
            names(&merge(&native, &python)),
            ["f", "_PyEval_EvalFrameDefault"]
        );
    }

    #[test]
    fn classifies_by_name_and_module() {
        assert_eq!(NativeFrameKind::of("_PyEval_EvalFrameDefault", true), Eval);
        assert_eq!(
            NativeFrameKind::of("_PyEval_EvalFrameDefault.cold", true),
            Eval
        );
        assert_eq!(NativeFrameKind::of("PyObject_Call", true), Interpreter);
        assert_eq!(NativeFrameKind::of("PyObject_Call", false), Other);
        assert_eq!(NativeFrameKind::of("_start", true), Other);
    }
}
