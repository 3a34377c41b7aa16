"""Compact probes behind bench/NOTES.md "Busy machines" (the quiet 2-CPU tables), written to fit a
2,000-character remote command, hence the style. Run `python FILE build x`, then e.g.
`KILN_NUM_THREADS=2 GOMP_SPINCOUNT=1000 taskset -c 2,3 python FILE 1000 idle`, and the same while
`taskset -c 3 python -c "while True: pass"` runs. The 100-dispatch 128x128 stencil graph of
bench/busy_bench.py --sweep."""
import os
import statistics as st
import sys
import time

import numpy as np

import kiln as kl

F=kl.ndarray(kl.f32,ndim=2)
@kl.kernel
def blur(a:F,b:F):
    for i,j in kl.ndrange((1,a.shape[0]-1),(1,a.shape[1]-1)):
        b[i,j]=0.2*(a[i,j]+a[i-1,j]+a[i+1,j]+a[i,j-1]+a[i,j+1])
if sys.argv[1]=="build":
    g=kl.GraphBuilder();A=kl.Arg("a",F,shape=("s","s"));B=kl.Arg("b",F,shape=("s","s"))
    for k in range(100):g.dispatch(blur,*((A,B) if k%2==0 else (B,A)))
    g.compile().save("/tmp/st.kiln");sys.exit()
s=kl.load("/tmp/st.kiln");f={"a":np.ones((128,128),np.float32),"b":np.zeros((128,128),np.float32)}
s.run(f);t=[]
for _ in range(300):
    t0=time.perf_counter();s.run(f);t.append(time.perf_counter()-t0)
print(sys.argv[1],sys.argv[2],os.environ.get("KILN_NUM_THREADS"),len(os.sched_getaffinity(0)),f"min {min(t)*1e3:.3f} med {st.median(t)*1e3:.3f} ms",flush=True)
