package main

import (
	"github.com/spf13/cobra"

	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/configs"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Show the training configuration"}
	var file string
	show := &cobra.Command{
		Use:   "show [key=value ...]",
		Short: "Print the configuration a run would use, as YAML",
		Long: `Prints the configuration tinct train would run with: with no arguments the
built-in configs/config.yaml, every key with its default and what it means;
with --config FILE and key=value overrides, the resolved configuration (what
a run writes to its config.yaml), after the same checks tinct train makes.`,
		Example: `  tinct config show
  tinct config show --config configs/sample.yaml epochs=40`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" && len(args) == 0 {
				_, err := cmd.OutOrStdout().Write(configs.Default)
				return err
			}
			cfg, err := config.Load(file, args)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(cfg.YAML())
			return err
		},
	}
	show.Flags().StringVar(&file, "config", "", "configuration file over the built-in defaults")
	cmd.AddCommand(show)
	return cmd
}
