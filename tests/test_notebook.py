"""notebooks/demo.ipynb runs top to bottom on CPU (tiny trained model, 3 DDIM steps, 8 frames) and shows videos.

The notebook is executed by nbclient in a fresh ``python3`` kernel: ipykernel installed in this environment
provides that kernel spec, and jupyter_client starts it with this interpreter (``sys.executable``) and this
process's environment, which is how the ``GID_JAX_*`` variables reach the notebook.
"""

import json
import os

import pytest

nbformat = pytest.importorskip('nbformat', reason='pip install -e ".[test]" installs the notebook runner')
nbclient = pytest.importorskip('nbclient', reason='pip install -e ".[test]" installs the notebook runner')
pytest.importorskip('ipykernel', reason='pip install -e ".[test]" installs the notebook kernel')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, 'notebooks', 'demo.ipynb')


def _cell(nb, tag):
  cells = [c for c in nb.cells if tag in c.metadata.get('tags', [])]
  assert len(cells) == 1, f'expected one cell tagged {tag!r}, found {len(cells)}'
  return cells[0]


def _text(cell) -> str:
  return ''.join(o.get('text', '') for o in cell.outputs if o.output_type == 'stream')


def _has_video(cell) -> bool:
  html = [o.get('data', {}).get('text/html', '') for o in cell.outputs
          if o.output_type in ('display_data', 'execute_result')]
  return any('<video' in h and 'data:video/mp4;base64,' in h for h in html)


def test_committed_notebook_has_no_outputs():
  with open(NOTEBOOK) as f:
    raw = json.load(f)
  nb = nbformat.reads(json.dumps(raw), as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == 'code':
      assert not cell.outputs and cell.execution_count is None, cell.source[:80]


@pytest.mark.slow
def test_demo_notebook_runs_on_cpu(ldm_runs, tmp_path, monkeypatch):
  monkeypatch.setenv('GID_JAX_CHECKPOINT', ldm_runs['s1'])
  monkeypatch.setenv('GID_JAX_DEMO_STEPS', '3')
  monkeypatch.setenv('GID_JAX_DEMO_FRAMES', '8')
  monkeypatch.setenv('GID_JAX_DEMO_MAX_SIDE', '128')
  monkeypatch.setenv('GID_JAX_RENDERER', 'none')  # softmax splatting: no bundled renderer needed
  monkeypatch.delenv('GID_JAX_DEMO_PHOTO', raising=False)
  # The kernel imports this checkout even where it is not pip-installed (otherwise the install cell would
  # try the network).
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, kernel_name='python3', timeout=600,
                                   resources={'metadata': {'path': str(tmp_path)}})
  client.execute()  # raises CellExecutionError (with the traceback) if a cell fails

  for cell in nb.cells:
    if cell.cell_type == 'code':
      errors = [o for o in cell.outputs if o.output_type == 'error']
      assert not errors, f'{cell.source[:80]!r}: {errors}'
  for tag in ('animate', 'loop', 'poke', 'edit'):
    assert _has_video(_cell(nb, tag)), f'the {tag!r} cell shows no inline mp4'
  assert '8 frames of 128x' in _text(_cell(nb, 'animate'))
  assert _text(_cell(nb, 'loop')).count('loop closure') == 2
