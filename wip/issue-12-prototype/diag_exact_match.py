# Data: riskstrat synth --patients 100000 --seed 3 --as-of 2026-04-01 --out /tmp/d1 --service-effect VW01=1.0,CM01=1.0 (with the issue-12 patch applied).
# Run with a Python that has pyarrow, pandas and numpy.
import pyarrow.parquet as pq, pyarrow.dataset as ds, pandas as pd, numpy as np
D='/tmp/d1'; A=np.datetime64('2026-04-01')
adm=ds.dataset(D+'/admissions').to_table().to_pandas()
pat=pq.read_table(D+'/patients.parquet').to_pandas()
sv=pq.read_table(D+'/services.parquet').to_pandas()
em=adm[adm.admission_method.isin(['21','22','23','24','28','2A','2B','25','2D','2C'])]
ids={p:i for i,p in enumerate(pat.pseudo_id)}
N=len(pat)
spells=[[] for _ in range(N)]
for p,a in zip(em.pseudo_id, em.admission_date.values.astype('datetime64[D]')):
    if p not in ids: continue
    spells[ids[p]].append(a)
spells=[np.sort(np.array(s,dtype='datetime64[D]')) for s in spells]
first=np.full(N,np.datetime64('NaT'),dtype='datetime64[D]')
for p,s in zip(sv.pseudo_id, sv.start_date.values.astype('datetime64[D]')):
    if p not in ids: continue
    first[ids[p]]=s if np.isnat(first[ids[p]]) or s<first[ids[p]] else first[ids[p]]
rs=pat.registration_start.values.astype('datetime64[D]'); re_=pat.registration_end.values.astype('datetime64[D]'); dd=pat.date_of_death.values.astype('datetime64[D]')
yob=pat.year_of_birth.values; sex=pat.sex.values
def cnt(i,a,b): s=spells[i]; return int(((s>=a)&(s<b)).sum())
def endof(i,s):
    e=min(s+365,A)
    if not np.isnat(re_[i]): e=min(e,re_[i]+1)
    if not np.isnat(dd[i]): e=min(e,dd[i]+1)
    return e
# index of people by (sex, ageband-at-year)
rng=np.random.default_rng(0)
T=[];C=[]
vw=sv[sv.service_code=='VW01']
hasadm=[i for i in range(N) if len(spells[i])]
for p,s in zip(vw.pseudo_id, vw.start_date.values.astype('datetime64[D]')):
    if p not in ids: continue
    i=ids[p]
    y=s.astype('datetime64[Y]').astype(int)+1970
    band=lambda j: min(max(y-yob[j],0),90)//5
    key=(sex[i],band(i),min(cnt(i,s-90,s),2),min(cnt(i,s-365,s),4))
    cands=[j for j in hasadm if j!=i and rs[j]<=s and (np.isnat(re_[j]) or re_[j]>=s) and (np.isnat(dd[j]) or dd[j]>=s) and (np.isnat(first[j]) or first[j]>s)
           and (sex[j],band(j),min(cnt(j,s-90,s),2),min(cnt(j,s-365,s),4))==key]
    if not cands: continue
    j=cands[rng.integers(len(cands))]
    for k,L in ((i,T),(j,C)):
        e=endof(k,s)
        L.append((cnt(k,s-365,s), cnt(k,s,e), (e-s).astype(int)))
T=np.array(T,float);C=np.array(C,float)
r=lambda X:(X[:,0].sum()/len(X)*1000, X[:,1].sum()/X[:,2].sum()*365000)
print(len(T),'treated before/after',r(T),'control',r(C))
