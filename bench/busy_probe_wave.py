"""Compact probes behind bench/NOTES.md "Busy machines" (the quiet 2-CPU tables), written to fit a
2,000-character remote command, hence the style. Run `python FILE build x`, then e.g.
`KILN_NUM_THREADS=2 GOMP_SPINCOUNT=1000 taskset -c 2,3 python FILE 1000 idle`, and the same while
`taskset -c 3 python -c "while True: pass"` runs. The waterwave-like graph of bench/busy_bench.py with a
simpler shading kernel."""
import os
import statistics as st
import sys
import time

import numpy as np

import kiln as kl

F=kl.ndarray(kl.f32,ndim=2)
@kl.kernel
def rip(h:F,cx:kl.f32,cy:kl.f32):
    for i,j in kl.ndrange((1,h.shape[0]-1),(1,h.shape[1]-1)):
        r=(i-cx)*(i-cx)+(j-cy)*(j-cy)
        if r<2500.0:h[i,j]=h[i,j]+0.5*kl.exp(-0.02*r)
@kl.kernel
def acc(h:F,v:F,a:F):
    for i,j in kl.ndrange((1,h.shape[0]-1),(1,h.shape[1]-1)):a[i,j]=2.0*(h[i-1,j]+h[i+1,j]+h[i,j-1]+h[i,j+1]-4.0*h[i,j])/0.0016-0.2*v[i,j]
@kl.kernel
def itg(h:F,v:F,a:F):
    for i,j in kl.ndrange((1,h.shape[0]-1),(1,h.shape[1]-1)):
        v[i,j]=v[i,j]+a[i,j]*0.01;h[i,j]=h[i,j]+v[i,j]*0.01
@kl.kernel
def shd(h:F,g:F,p:F):
    for i,j in kl.ndrange((1,h.shape[0]-1),(1,h.shape[1]-1)):
        gx=(h[i+1,j]-h[i-1,j])*25.0;gy=(h[i,j+1]-h[i,j-1])*25.0
        c=kl.rsqrt(1.0+gx*gx+gy*gy);k=kl.min(kl.max(int(i+gx*4.0),0),h.shape[0]-1)
        p[i,j]=(1.0-c)*g[k,j]+c
if sys.argv[1]=="build":
    A={n:kl.Arg(n,F,shape=("n","n")) for n in "hvagp"};g=kl.GraphBuilder()
    g.dispatch(rip,A["h"],kl.Arg("cx",kl.f32),kl.Arg("cy",kl.f32));g.dispatch(acc,A["h"],A["v"],A["a"])
    g.dispatch(itg,A["h"],A["v"],A["a"]);g.dispatch(shd,A["h"],A["g"],A["p"])
    g.compile().save("/tmp/w.kiln");sys.exit()
s=kl.load("/tmp/w.kiln");n=256;t=[]
for r in range(6):
    f={c:np.zeros((n,n),np.float32) for c in "hvagp"};t0=time.perf_counter()
    for k in range(60):f["cx"]=60.0+2*k;f["cy"]=128.0;s.run(f)
    t.append(time.perf_counter()-t0)
print(sys.argv[1],sys.argv[2],os.environ.get("KILN_NUM_THREADS"),"wave med %.1f ms"%(st.median(t[1:])*1e3),float(f["h"].sum()),flush=True)
