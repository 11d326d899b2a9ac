from scheduler_cli.main import main

main()
