//! Choosing an algorithm per geometry (cuDNN's heuristics or timed
//! trials), the cache of choices and the workspace they need.

use super::*;

/// One candidate from cuDNN's heuristics or trials.
pub(super) struct Candidate {
    pub(super) algo: Algo,
    pub(super) ok: bool,
    pub(super) math: sys::cudnnMathType_t,
}

/// Up to 16 candidates, best first, for `pass` (heuristics or trials).
pub(super) fn candidates(
    state: &State,
    pass: Pass,
    ds: &Descs,
    trials: bool,
) -> Result<Vec<Candidate>> {
    const MAX: usize = 16;
    let h = state.handle;
    let mut count: c_int = 0;
    let ok = sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS;
    // SAFETY (all three arms): live handle and descriptors; `perf` holds
    // MAX zeroed plain-data records and cuDNN writes at most MAX of them.
    let out = match pass {
        Pass::Forward => {
            let mut perf: [sys::cudnnConvolutionFwdAlgoPerf_t; MAX] = unsafe { std::mem::zeroed() };
            let status = unsafe {
                if trials {
                    sys::cudnnFindConvolutionForwardAlgorithm(
                        h,
                        ds.x.0,
                        ds.w.0,
                        ds.conv.0,
                        ds.y.0,
                        MAX as c_int,
                        &mut count,
                        perf.as_mut_ptr(),
                    )
                } else {
                    sys::cudnnGetConvolutionForwardAlgorithm_v7(
                        h,
                        ds.x.0,
                        ds.w.0,
                        ds.conv.0,
                        ds.y.0,
                        MAX as c_int,
                        &mut count,
                        perf.as_mut_ptr(),
                    )
                }
            };
            status
                .result()
                .map_err(|e| err("forward algorithm search", e))?;
            perf[..(count.max(0) as usize).min(MAX)]
                .iter()
                .map(|p| Candidate {
                    algo: Algo::Forward(p.algo),
                    ok: p.status == ok,
                    math: p.mathType,
                })
                .collect()
        }
        Pass::Data => {
            let mut perf: [sys::cudnnConvolutionBwdDataAlgoPerf_t; MAX] =
                unsafe { std::mem::zeroed() };
            let status = unsafe {
                if trials {
                    sys::cudnnFindConvolutionBackwardDataAlgorithm(
                        h,
                        ds.w.0,
                        ds.y.0,
                        ds.conv.0,
                        ds.x.0,
                        MAX as c_int,
                        &mut count,
                        perf.as_mut_ptr(),
                    )
                } else {
                    sys::cudnnGetConvolutionBackwardDataAlgorithm_v7(
                        h,
                        ds.w.0,
                        ds.y.0,
                        ds.conv.0,
                        ds.x.0,
                        MAX as c_int,
                        &mut count,
                        perf.as_mut_ptr(),
                    )
                }
            };
            status
                .result()
                .map_err(|e| err("data-gradient algorithm search", e))?;
            perf[..(count.max(0) as usize).min(MAX)]
                .iter()
                .map(|p| Candidate {
                    algo: Algo::Data(p.algo),
                    ok: p.status == ok,
                    math: p.mathType,
                })
                .collect()
        }
        Pass::Filter => {
            let mut perf: [sys::cudnnConvolutionBwdFilterAlgoPerf_t; MAX] =
                unsafe { std::mem::zeroed() };
            let status = unsafe {
                if trials {
                    sys::cudnnFindConvolutionBackwardFilterAlgorithm(
                        h,
                        ds.x.0,
                        ds.y.0,
                        ds.conv.0,
                        ds.w.0,
                        MAX as c_int,
                        &mut count,
                        perf.as_mut_ptr(),
                    )
                } else {
                    sys::cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                        h,
                        ds.x.0,
                        ds.y.0,
                        ds.conv.0,
                        ds.w.0,
                        MAX as c_int,
                        &mut count,
                        perf.as_mut_ptr(),
                    )
                }
            };
            status
                .result()
                .map_err(|e| err("filter-gradient algorithm search", e))?;
            perf[..(count.max(0) as usize).min(MAX)]
                .iter()
                .map(|p| Candidate {
                    algo: Algo::Filter(p.algo),
                    ok: p.status == ok,
                    math: p.mathType,
                })
                .collect()
        }
    };
    Ok(out)
}

/// Workspace bytes `algo` needs, or `None` if cuDNN refuses the
/// algorithm for this geometry.
pub(super) fn workspace_size(state: &State, ds: &Descs, algo: Algo) -> Option<usize> {
    let h = state.handle;
    // SAFETY: live handle and descriptors.
    unsafe {
        match algo {
            Algo::Forward(a) => result::get_convolution_forward_workspace_size(
                h, ds.x.0, ds.w.0, ds.conv.0, ds.y.0, a,
            ),
            Algo::Data(a) => result::get_convolution_backward_data_workspace_size(
                h, ds.w.0, ds.y.0, ds.conv.0, ds.x.0, a,
            ),
            Algo::Filter(a) => result::get_convolution_backward_filter_workspace_size(
                h, ds.x.0, ds.y.0, ds.conv.0, ds.w.0, a,
            ),
        }
    }
    .ok()
}

/// Chooses (or recalls) the algorithm for `key` and sets the descriptor's
/// math type accordingly.
pub(super) fn choose(
    state: &mut State,
    key: Key,
    ds: &Descs,
    default_math: sys::cudnnMathType_t,
) -> Result<Choice> {
    if let Some(c) = state.choices.get(&key) {
        ds.conv.set_math(c.math)?;
        return Ok(*c);
    }
    ds.conv.set_math(default_math)?;
    let limit = workspace_limit();
    let strict = default_math == sys::cudnnMathType_t::CUDNN_FMA_MATH;
    let mut fitting: Option<Choice> = None;
    let mut smallest: Option<Choice> = None;
    for c in candidates(state, key.pass, ds, key.benchmark)? {
        if !c.ok {
            continue;
        }
        // In strict f32 mode keep the FMA descriptor whatever the record
        // says, so no tensor-core (TF32) kernel can run.
        let math = if strict { default_math } else { c.math };
        ds.conv.set_math(math)?;
        let Some(ws) = workspace_size(state, ds, c.algo) else {
            continue;
        };
        let choice = Choice {
            algo: c.algo,
            workspace: ws,
            math,
        };
        if ws <= limit {
            fitting = Some(choice);
            break;
        }
        if smallest.is_none_or(|s| ws < s.workspace) {
            smallest = Some(choice);
        }
    }
    let Some(choice) = fitting.or(smallest) else {
        return Err(err(
            &format!(
                "no {:?} algorithm supports geometry {:?} ({})",
                key.pass,
                key.geom,
                if key.f64 { "f64" } else { "f32" }
            ),
            "CUDNN_STATUS_NOT_SUPPORTED",
        ));
    };
    ds.conv.set_math(choice.math)?;
    state.choices.insert(key, choice);
    Ok(choice)
}

/// Makes the workspace at least `bytes` long.
pub(super) fn workspace(state: &mut State, bytes: usize) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    if state.workspace.as_ref().is_none_or(|w| w.len() < bytes) {
        state.workspace = None;
        // SAFETY: cuDNN only writes scratch data there before reading it.
        let buf = unsafe { state.stream.alloc::<u8>(bytes) }
            .map_err(|e| err(&format!("allocating a {bytes}-byte workspace"), e))?;
        state.workspace = Some(buf);
    }
    Ok(())
}
