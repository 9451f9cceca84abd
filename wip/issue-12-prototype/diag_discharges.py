# Data: riskstrat synth --patients 100000 --seed 3 --as-of 2026-04-01 --out /tmp/d1 --service-effect VW01=1.0,CM01=1.0 (with the issue-12 patch applied).
# Run with a Python that has pyarrow, pandas and numpy.
import pyarrow.parquet as pq, pyarrow.dataset as ds, pandas as pd, numpy as np, datetime as dt
D='/tmp/d1'
adm=ds.dataset(D+'/admissions').to_table().to_pandas()
sv=pq.read_table(D+'/services.parquet').to_pandas()
A=pd.Timestamp('2026-04-01')
em=adm[adm.admission_method.isin(['21','22','23','24','28','2A','2B','25','2D','2C'])].copy()
em['ad']=pd.to_datetime(em.admission_date); em['dd']=pd.to_datetime(em.discharge_date)
em=em.sort_values(['pseudo_id','ad'])
vw=sv[sv.service_code=='VW01'].set_index('pseudo_id').start_date
g=em.groupby('pseudo_id')
rows=[]
for pid,df in g:
    ads=df.ad.values
    for d in df.dd.dropna().values:
        d=pd.Timestamp(d)
        if not (A-pd.Timedelta(days=730) <= d < A-pd.Timedelta(days=366)): continue
        prior=((ads>=np.datetime64(d-pd.Timedelta(days=365)))&(ads<np.datetime64(d))).sum()
        post=((ads>np.datetime64(d))&(ads<np.datetime64(d+pd.Timedelta(days=365)))).sum()
        st=vw.get(pid)
        ref= st is not None and d<=pd.Timestamp(st)<=d+pd.Timedelta(days=2)
        rows.append((pid,d,min(prior,4),post,ref))
r=pd.DataFrame(rows,columns=['pid','d','prior','post','ref'])
print(r.groupby(['prior','ref']).post.agg(['mean','count']))
