{
  description = "persistence: the PostgreSQL persistence layer of the arbitrage bot";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixpkgs-unstable";
    flake-parts.url = "github:hercules-ci/flake-parts";
    flake-parts.inputs.nixpkgs-lib.follows = "nixpkgs";
    process-compose-flake.url = "github:Platonic-Systems/process-compose-flake";
    services-flake.url = "github:juspay/services-flake";
  };

  outputs =
    inputs@{ flake-parts, ... }:
    flake-parts.lib.mkFlake { inherit inputs; } {
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      imports = [ inputs.process-compose-flake.flakeModule ];

      perSystem =
        {
          config,
          self',
          pkgs,
          lib,
          ...
        }:
        let
          # Pinned major version: a change of it is a data migration (pg_upgrade), not a bump.
          # 18 matches the embedded server of the pip path.
          postgresql = pkgs.postgresql_18;
          name = "persistence"; # the database and its owner, created on first start
          # 5432 unless PERSISTENCE_NIX_PG_PORT is set and the flake is evaluated with --impure
          portFromEnv = builtins.getEnv "PERSISTENCE_NIX_PG_PORT";
          port = if portFromEnv == "" then 5432 else lib.toInt portFromEnv;
          databaseUrl = "postgresql://${name}@127.0.0.1:${toString port}/${name}";
          adminUrl = "postgresql://${name}@127.0.0.1:${toString port}/postgres";
          python = pkgs.python312;
        in
        {
          process-compose.services = {
            imports = [ inputs.services-flake.processComposeModules.default ];
            # Relative data directories follow the directory process-compose starts in; anchor
            # this one at the repository root so a run from a subdirectory finds the same data.
            cli.preHook = ''
              export PERSISTENCE_ROOT="''${PERSISTENCE_ROOT:-$(git rev-parse --show-toplevel 2>/dev/null || pwd)}"
            '';
            services.postgres.pg = {
              enable = true;
              package = postgresql;
              inherit port;
              listen_addresses = "127.0.0.1";
              # apart from the embedded server's .postgres-data/embedded
              dataDir = "$PERSISTENCE_ROOT/.postgres-data/nix";
              superuser = name;
              initialDatabases = [ { inherit name; } ];
            };
          };

          # plain `nix run` starts the services too
          packages.default = self'.packages.services;

          devShells.default = pkgs.mkShell {
            # the server package of every enabled service: psql, pg_dump, pg_isready, ...
            inputsFrom = [ config.process-compose.services.services.outputs.devShell ];
            packages = [
              self'.packages.services # `services` starts PostgreSQL, like `nix run .#services`
              python
              pkgs.git
            ];
            env = {
              DATABASE_URL = databaseUrl;
              TEST_DATABASE_URL = adminUrl;
              PGHOST = "127.0.0.1";
              PGPORT = toString port;
              PGUSER = name;
              PGDATABASE = name;
            };
            # The Python dependencies come from PyPI into a project virtual environment, exactly
            # as on the pip path, so both paths run the same versions.
            shellHook = ''
              if [ ! -x .venv/bin/python ]; then
                ${python}/bin/python -m venv .venv
              fi
              source .venv/bin/activate
              if ! python -c "import persistence, pytest" 2>/dev/null; then
                pip install --quiet -e '.[dev]'
              fi
              echo "persistence dev shell: start PostgreSQL with 'services' (data in .postgres-data/nix), then"
              echo "  python -m persistence.migrate && python -m pytest -n 2"
            '';
          };

          # Every migration applies, reverts and applies again on a throwaway cluster of the
          # pinned PostgreSQL: psql only, so it needs no network inside the build sandbox.
          checks.migrations =
            pkgs.runCommand "persistence-migrations-check" { nativeBuildInputs = [ postgresql ]; }
              ''
                export PGDATA=$TMPDIR/pgdata PGHOST=$TMPDIR PGUSER=check PGDATABASE=postgres
                initdb --username=check --auth=trust --no-sync >/dev/null
                pg_ctl start --wait --options "-c listen_addresses= -c unix_socket_directories=$TMPDIR -c fsync=off" >/dev/null
                run() { psql --quiet --set ON_ERROR_STOP=1 --file "$1" >/dev/null; }
                ups=$(ls ${./migrations}/*.up.sql | sort)
                for f in $ups; do run "$f"; done
                for f in $(echo "$ups" | sort -r); do run "''${f%.up.sql}.down.sql"; done
                for f in $ups; do run "$f"; done
                pg_ctl stop --mode fast >/dev/null
                touch $out
              '';

          formatter = pkgs.nixfmt;
        };
    };
}
