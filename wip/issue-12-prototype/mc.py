"""Monte Carlo driver: python mc.py OUT.jsonl SEED_FROM SEED_TO 'RR_VW,RR_CM' CONFIGS.json [dgp-options-json]
Writes one JSON line per (seed, service, config)."""
import sys, json, time, numpy as np, dgp, est
out, s0, s1, rr = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), tuple(map(float, sys.argv[4].split(',')))
configs = json.load(open(sys.argv[5]))
dopt = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
with open(out, 'a') as fh:
    for seed in range(s0, s1):
        t0 = time.time()
        d = dgp.generate(seed, n=dopt.get('n', 100_000), rr=rr, svc=dopt.get('svc'), bump=dopt.get('bump', 0.0))
        ix = est.Index(d)
        beta = est.fit_risk(ix); prog = est.fit_prog(ix, beta)
        for name, cfg in configs.items():
            for sv in (0, 1):
                r = est.evaluate(ix, beta, sv, cfg, rng=np.random.default_rng(1000 * seed + sv), prog=prog)
                r = {k: (float(v) if not isinstance(v, dict) else {a: float(b) for a, b in v.items()}) for k, v in r.items()}
                r.update(seed=seed, service=['VW01', 'CM01'][sv], rr=rr[sv], config=name, dgp=dopt)
                fh.write(json.dumps(r) + '\n')
        fh.flush()
        print(seed, round(time.time() - t0, 1), flush=True)
