# One parity log (run-parity / extra-parity output) -> "name rows-ok rows-failed worst-error (case: quantity) [EXIT]".
# Shared by the forward-*-check.sh host scripts:  python3 parity-summary.py <log>
import re
import sys

path = sys.argv[1]
text = open(path).read()
rows = [l.split('|') for l in text.splitlines() if re.search(r'\| (yes|NO) \|\s*$', l)]
worst = max(rows, key=lambda r: float(r[3]), default=None)
print(path.split('/')[-1], len([r for r in rows if r[5].strip() == 'yes']), len([r for r in rows if r[5].strip() == 'NO']),
      f"{worst[3].strip()} ({worst[1].strip()}: {worst[2].strip()})" if worst else '-', 'EXIT' if 'exited with' in text else '')
