"""python summary2.py FILE.jsonl [...] [--est plain|sw|swt|all] : table per (config, service, RR).
baseline = the enrolled's no-service rate over follow-up (y0_rate, from truth); also % of the enrolled pre-period rate."""
import sys, json, numpy as np, collections
args = [a for a in sys.argv[1:] if not a.startswith('--')]
which = [a[6:] for a in sys.argv[1:] if a.startswith('--est=')] or ['plain', 'sw']
which = ['plain', 'sw', 'swt'] if which == ['all'] else which
rows = [json.loads(l) for f in args for l in open(f)]
g = collections.defaultdict(list)
for r in rows:
    g[(json.dumps(r.get('dgp', {}), sort_keys=True), r['config'], r['service'], r['rr'])].append(r)
pre = {'plain': ('est', 'lo', 'hi'), 'sw': ('sw_est', 'sw_lo', 'sw_hi'), 'swt': ('swt_est', 'swt_lo', 'swt_hi')}
print('| config | est | service | RR | seeds | match rate | mean est | mean truth | mean error | MC SE | err/MCSE | err % baseline (y0) | MC SE % baseline | coverage | mean SE / SD est | max SMD issue vars mean/worst | max SMD matched vars mean/worst | max SMD all 18 mean/worst | placebo mean (cov 0) | later-enrolled ctl | oracle err vs truth_m | EB ESS / before |')
print('|' + '---|' * 22)
for k in sorted(g):
    R = g[k]; n = len(R)
    A = lambda f: np.array([r.get(f, np.nan) for r in R], float)
    for w in which:
        e, lo, hi = pre[w]
        if np.isnan(A(e)).all():
            continue
        err = A(e) - A('truth')
        mcse = err.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
        cov = np.mean((A(lo) <= A('truth')) & (A('truth') <= A(hi)))
        pcov = np.mean(np.abs(A('placebo')) <= 1.96 * A('placebo_se'))
        base = A('y0_rate').mean()
        se_col = {'plain': 'se', 'sw': 'sw_se', 'swt': 'swt_se'}[w]
        print(f"| {k[1]} | {w} | {k[2]} | {k[3]} | {n} | {A('match_rate').mean():.3f} | {A(e).mean():.1f} | {A('truth').mean():.1f} | {err.mean():+.1f} | {mcse:.1f} | {err.mean()/mcse:+.2f} | {100*err.mean()/base:+.1f}% | {100*mcse/base:.1f}% | {cov:.2f} | {A(se_col).mean():.0f}/{A(e).std(ddof=1):.0f} | {A('max_smd_issue').mean():.3f}/{A('max_smd_issue').max():.3f} | {A('max_smd_used').mean():.3f}/{A('max_smd_used').max():.3f} | {A('max_smd_after').mean():.3f}/{A('max_smd_after').max():.3f} | {A('placebo').mean():+.1f} ({pcov:.2f}) | {A('later_enrolled_controls').mean():.3f} | {(A('est_oracle')-A('truth_m')).mean():+.1f} | {A('eb_ess').mean():.0f}/{A('eb_ess0').mean():.0f} |")
