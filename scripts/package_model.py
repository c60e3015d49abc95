"""Package finished training runs as a shipped model (see :mod:`sen.training.package`).

    python scripts/package_model.py sen_mp runs/a runs/b runs/c --config configs/sen_mp.toml
"""

from sen.training.package import main

if __name__ == "__main__":
    main()
